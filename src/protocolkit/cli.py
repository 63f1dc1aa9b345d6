"""The command-line interface: thin; it parses arguments, calls the public API and prints.

Exit status: 0 success; 64 usage error; 65 bad input data (nothing appended); 74 the store
could not do it; 75 another writer got there first (retry); 70 an internal error (a bug).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import click
import orjson
import pendulum

from protocolkit.audit import (
    ProtocolSet,
    ReceiptError,
    diff_protocols,
    diff_verdicts,
    make_receipt,
    verify_receipt,
)
from protocolkit.coverage import ClauseCoverage
from protocolkit.engine import evaluate
from protocolkit.errors import ProtocolKitError, RuleErrors
from protocolkit.events import ENVELOPE_FIELDS, EntryCorrected, EntryRetracted, Event
from protocolkit.ingest import export_jsonl, import_jsonl
from protocolkit.projections import Projector, render_states, render_study
from protocolkit.report import (
    evaluation_to_json,
    explain,
    render_summary,
    render_text,
)
from protocolkit.report import schema_text as report_schema_text
from protocolkit.rules import Protocol, default_protocol_path, load_protocol
from protocolkit.serde import event_to_json, read_jsonl
from protocolkit.store import EventStore, open_store
from protocolkit.timeutil import parse_instant

__all__ = ["main"]

EX_USAGE = 64
EX_SOFTWARE = 70

_STORE_HELP = (
    "Store location: a SQLite path, sqlite:///path.db, or postgresql://user@host:port/db "
    "(default: $PROTOCOLKIT_STORE, else protocolkit.db in the working folder)."
)
_store_option = click.option("--store", "store_url", metavar="URL", help=_STORE_HELP)
_format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table",
    show_default=True, help="Readable table, or JSON for machines.",
)


def _open(store_url: str | None) -> EventStore:
    return open_store(store_url)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="protocolkit")
def cli() -> None:
    """protocolkit: clinical-trial protocols as executable, auditable rules.

    Events go into an append-only log (a SQLite file by default); nothing is ever updated
    or deleted.
    """


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@_store_option
@click.option("--skip-existing", is_flag=True,
              help="Leave out events whose id is already stored (re-import is a no-op).")
def import_command(file: Path, store_url: str | None, skip_existing: bool) -> None:
    """Import a JSON Lines file of events (use - for standard input).

    The whole file is one atomic append: if any line is bad, nothing is appended and every
    problem is listed with its line and field.
    """
    with _open(store_url) as store:
        if str(file) == "-":
            result = import_jsonl(store, sys.stdin.buffer, skip_existing=skip_existing)
        else:
            if not file.exists():
                raise click.BadParameter(f"no such file: {file}", param_hint="FILE")
            result = import_jsonl(store, file, skip_existing=skip_existing)
        click.echo(
            f"imported {len(result.appended)} events for {len(result.subjects)} subjects "
            f"into {store.location.display}"
            + (f" ({result.skipped} already stored, skipped)" if result.skipped else "")
        )


@cli.command("export")
@_store_option
@click.option("--study", help="Only this study.")
@click.option("--subject", help="Only this subject.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default="-", show_default=True, help="Where to write the JSON Lines.")
def export_command(
    store_url: str | None, study: str | None, subject: str | None, output: Path
) -> None:
    """Export events as JSON Lines, in global record order (or one subject's stream)."""
    with _open(store_url) as store:
        if str(output) == "-":
            export_jsonl(store, sys.stdout.buffer, study=study, subject=subject)
            sys.stdout.flush()
        else:
            with output.open("wb") as out:
                count = export_jsonl(store, out, study=study, subject=subject)
            click.echo(f"exported {count} events to {output}", err=True)


@cli.command("log")
@click.argument("subject")
@click.option("--study", help="The study, when the subject id is in several.")
@_store_option
@_format_option
def log_command(subject: str, study: str | None, store_url: str | None, fmt: str) -> None:
    """Show a subject's history in record order, with corrections and retractions marked."""
    with _open(store_url) as store:
        _print_log(store, subject, study, fmt)


@cli.command("subjects")
@click.option("--study", help="Only this study.")
@_store_option
def subjects_command(study: str | None, store_url: str | None) -> None:
    """List the subjects in the store, with how many events each has."""
    with _open(store_url) as store:
        rows = [(s, subj, str(store.version(s, subj))) for s, subj in store.subjects(study)]
        click.echo(_table(("study", "subject", "events"), rows))


def _protocol(path: Path | None) -> Protocol:
    if path is None:
        return load_protocol(default_protocol_path())
    return load_protocol(path)


def _protocol_set(path: Path | None) -> ProtocolSet:
    return ProtocolSet.load(path if path is not None else default_protocol_path())


def _instant_option(value: str | None, zone: str | None) -> pendulum.DateTime | None:
    """An instant from RFC 9557 text, or a date meaning the end of that day in the site zone."""
    if value is None:
        return None
    if len(value) == 10:
        try:
            day = pendulum.parse(value, tz=zone or "UTC")
        except Exception:
            raise click.BadParameter(f"not a date or date-time: {value}") from None
        assert isinstance(day, pendulum.DateTime)
        return day.end_of("day")
    try:
        return parse_instant(value)
    except ProtocolKitError as exc:
        raise click.BadParameter(str(exc)) from None


_protocol_option = click.option(
    "--protocol", "protocol_path", type=click.Path(exists=True, path_type=Path),
    help="The protocol file, or a folder of its versions (amendments); default: the embedded "
         "NCT03918265 protocol.",
)
_at_option = click.option("--at", "at_text", metavar="TIME",
                          help="Evaluation time (RFC 9557 date-time, or a date meaning its end in "
                               "the site's zone; default: now).")
_known_option = click.option("--known-at", "known_text", metavar="TIME",
                             help="Use only events recorded up to this time (default: --at).")


@cli.command("check-rules")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
def check_rules_command(files: tuple[Path, ...]) -> None:
    """Check protocol files: print every problem (file:line:column [rule]) or a summary."""
    failures: list[ProtocolKitError] = []
    for path in files:
        try:
            protocol = load_protocol(path)
        except ProtocolKitError as exc:
            failures.append(exc)
            continue
        click.echo(f"{path}: ok: {protocol.id} v{protocol.version} (effective "
                   f"{protocol.effective}), {len(protocol.criteria)} criteria, "
                   f"{len(protocol.deviations)} deviation rules, "
                   f"{len(protocol.endpoints)} endpoints")
    if failures:
        raise failures[0] if len(failures) == 1 else RuleErrors(
            [e for f in failures for e in getattr(f, "errors", [f])])


@cli.command("evaluate")
@click.argument("subjects", nargs=-1)
@_protocol_option
@_at_option
@_known_option
@_store_option
@_format_option
@click.option("--receipt", "receipt_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a receipt (JSON Lines, one per subject) to this file.")
def evaluate_command(subjects: tuple[str, ...], protocol_path: Path | None, at_text: str | None,
                     known_text: str | None, store_url: str | None, fmt: str,
                     receipt_path: Path | None) -> None:
    """Evaluate the protocol for subjects in the store (all of the study's by default).

    With --known-at, only events recorded up to then count: the answer the system gave then.
    """
    pset = _protocol_set(protocol_path)
    protocol = pset.versions[-1]
    at = _instant_option(at_text, protocol.zone) or pendulum.now("UTC")
    known = _instant_option(known_text, protocol.zone)
    receipts = []
    results = []
    with _open(store_url) as store:
        for s in _subjects(store, protocol, subjects):
            events = [r.event for r in store.history(protocol.id, s)]
            result = pset.evaluate(events, at=at, known_at=known)
            results.append(result)
            used = next(v for v in pset.versions if v.version == result.protocol_version)
            receipts.append(make_receipt(result, events, used))
    if receipt_path is not None:
        receipt_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts))
        click.echo(f"{len(receipts)} receipt(s) written to {receipt_path}", err=True)
    if fmt == "json":
        click.echo(orjson.dumps([evaluation_to_json(r) for r in results],
                                option=orjson.OPT_INDENT_2).decode())
        return
    click.echo("\n\n".join(render_text(r) for r in results))


@cli.command("explain")
@click.argument("subject")
@click.argument("rule")
@_protocol_option
@_at_option
@_known_option
@_store_option
def explain_command(subject: str, rule: str, protocol_path: Path | None, at_text: str | None,
                    known_text: str | None, store_url: str | None) -> None:
    """Show the evidence behind one verdict (a criterion, deviation code or endpoint)."""
    protocol = _protocol(protocol_path)
    at = _instant_option(at_text, protocol.zone)
    known = _instant_option(known_text, protocol.zone)
    with _open(store_url) as store:
        [subject] = _subjects(store, protocol, (subject,))
        events = [r.event for r in store.history(protocol.id, subject)]
    result = evaluate(protocol, events, at=at, known_at=known)
    click.echo(explain(result, rule, events))


@contextlib.contextmanager
def _projector(store_url: str | None, protocol: Protocol, at_text: str | None
               ) -> Iterator[Projector]:
    """A projector caught up from the log and re-evaluated at --at (default: now)."""
    at = _instant_option(at_text, protocol.zone)
    with _open(store_url) as store:
        projector = Projector(store, protocol, at=at)
        # The rows hold the state as of when they were computed; windows close as time
        # passes, so catch up and re-evaluate everyone at the time asked for, in one pass.
        projector.refresh()
        yield projector


@cli.command("status")
@click.argument("subject", required=False)
@_protocol_option
@_at_option
@_store_option
@_format_option
def status_command(subject: str | None, protocol_path: Path | None, at_text: str | None,
                   store_url: str | None, fmt: str) -> None:
    """The current state of every subject (or one), caught up from the log first."""
    protocol = _protocol(protocol_path)
    with _projector(store_url, protocol, at_text) as projector:
        states = projector.subjects(subject)
    if subject is not None and not states:
        raise click.ClickException(f"no subject {subject!r} in study {protocol.id}")
    if fmt == "json":
        click.echo(orjson.dumps([attrs.asdict(s) for s in states],
                                option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_states(states, detailed=subject is not None))


@cli.command("study")
@_protocol_option
@_at_option
@_store_option
@_format_option
def study_command(protocol_path: Path | None, at_text: str | None, store_url: str | None,
                  fmt: str) -> None:
    """The study at a glance: enrolment, screening funnel, deviations, endpoint completeness."""
    protocol = _protocol(protocol_path)
    with _projector(store_url, protocol, at_text) as projector:
        state = projector.study()
    if fmt == "json":
        click.echo(orjson.dumps(attrs.asdict(state), option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_study(state))


def _subjects(store: EventStore, protocol: Protocol, wanted: Sequence[str]) -> list[str]:
    present = [s for _, s in store.subjects(protocol.id)]
    if not wanted:
        if not present:
            raise click.ClickException(
                f"no subjects of study {protocol.id} in {store.location.display}")
        return present
    missing = [s for s in wanted if s not in present]
    if missing:
        raise click.ClickException(
            f"no events for {', '.join(missing)} in study {protocol.id} "
            f"({store.location.display})")
    return list(wanted)


@cli.command("coverage")
@_protocol_option
@_at_option
@_store_option
def coverage_command(protocol_path: Path | None, at_text: str | None,
                     store_url: str | None) -> None:
    """Which criteria, deviation rules and response branches the store's subjects exercise."""
    protocol = _protocol(protocol_path)
    at = _instant_option(at_text, protocol.zone)
    coverage = ClauseCoverage(protocol)
    with _open(store_url) as store:
        for _, subject in store.subjects(protocol.id):
            coverage.add(evaluate(protocol, store.history(protocol.id, subject), at=at))
    click.echo(coverage.report())


@cli.command("verify")
@_store_option
def verify_command(store_url: str | None) -> None:
    """Recompute the integrity chain; name the first altered, removed, inserted or moved event."""
    with _open(store_url) as store:
        report = store.verify()
    if report.ok:
        click.echo(f"ok: {report.events} events, chain head {report.head}")
        return
    for problem in report.problems[:20]:
        click.echo(str(problem), err=True)
    if len(report.problems) > 20:
        click.echo(f"... and {len(report.problems) - 20} more", err=True)
    raise ReceiptError(f"the log was changed outside protocolkit: {len(report.problems)} "
                       f"problem(s); first: {report.problems[0]}")


@cli.command("verify-receipt")
@click.argument("receipt_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_protocol_option
@_store_option
@click.option("--events", "events_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Re-run from this JSON Lines file instead of the store.")
def verify_receipt_command(receipt_file: Path, protocol_path: Path | None,
                           store_url: str | None, events_file: Path | None) -> None:
    """Re-run the evaluations of a receipt file and confirm every digest."""
    pset = _protocol_set(protocol_path)
    lines = [line for line in receipt_file.read_bytes().splitlines() if line.strip()]
    failures = 0
    for line in lines:
        receipt = orjson.loads(line)
        if events_file is not None:
            events = read_jsonl(events_file.read_text("utf-8").splitlines())
        else:
            with _open(store_url) as store:
                events = [r.event for r in store.history(receipt["study"], receipt["subject"])]
        try:
            verify_receipt(receipt, events, pset.versions)
        except ReceiptError as exc:
            failures += 1
            click.echo(f"{receipt['subject']}: FAILED: {exc}", err=True)
        else:
            click.echo(f"{receipt['subject']}: ok ({receipt['protocol']['id']} "
                       f"v{receipt['protocol']['version']}, {receipt['events']['count']} events)")
    if failures:
        raise ReceiptError(f"{failures} of {len(lines)} receipt(s) do not verify")


@cli.command("diff")
@click.argument("subject")
@click.option("--from", "from_text", required=True, metavar="TIME",
              help="The earlier knowledge time.")
@click.option("--to", "to_text", metavar="TIME", help="The later knowledge time (default: now).")
@_protocol_option
@_at_option
@_store_option
@_format_option
def diff_command(subject: str, from_text: str, to_text: str | None,
                 protocol_path: Path | None, at_text: str | None, store_url: str | None,
                 fmt: str) -> None:
    """Every verdict that changed between two knowledge times, and the events that changed it."""
    pset = _protocol_set(protocol_path)
    zone = pset.versions[-1].zone
    known_from = _instant_option(from_text, zone)
    known_to = _instant_option(to_text, zone) or pendulum.now("UTC")
    assert known_from is not None
    at = _instant_option(at_text, zone)
    with _open(store_url) as store:
        [one] = _subjects(store, pset.versions[-1], (subject,))
        events = [r.event for r in store.history(pset.id, one)]
    changes = diff_verdicts(events, pset, known_from=known_from, known_to=known_to, at=at)
    if fmt == "json":
        click.echo(orjson.dumps([attrs.asdict(c) for c in changes],
                                option=orjson.OPT_INDENT_2).decode())
        return
    if not changes:
        click.echo(f"{subject}: no verdict changed between {known_from} and {known_to}")
        return
    for change in changes:
        click.echo(f"{change.rule}: {change.before or '-'} -> {change.after or '-'}")
        for e in change.events:
            why = f" ({e['reason']})" if "reason" in e else ""
            click.echo(f"    {e['change']:<9} {e['type']:<24} recorded {e['recorded_at']} by "
                       f"{e['recorded_by']}{why}")


@cli.command("diff-protocol")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_at_option
@_store_option
def diff_protocol_command(old: Path, new: Path, at_text: str | None,
                          store_url: str | None) -> None:
    """List the subjects whose verdicts would change from protocol OLD to NEW."""
    before, after = load_protocol(old), load_protocol(new)
    at = _instant_option(at_text, after.zone) or pendulum.now("UTC")
    with _open(store_url) as store:
        histories = [[r.event for r in store.history(before.id, s)]
                     for _, s in store.subjects(before.id)]
    found = diff_protocols(histories, before, after, at=at)
    click.echo(f"{len(found)} of {len(histories)} subject(s) change from v{before.version} to "
               f"v{after.version}")
    for subject, changes in found:
        for rule, a, b in changes:
            click.echo(f"  {subject}  {rule}: {a or '-'} -> {b or '-'}")


@cli.command("schema")
@click.option("--of", "what", type=click.Choice(["events", "evaluation"]), default="events",
              show_default=True, help="The event interchange format, or evaluation results.")
def schema_command(what: str) -> None:
    """Print a JSON Schema: of the JSON Lines interchange format, or of evaluation results."""
    if what == "evaluation":
        click.echo(report_schema_text(), nl=False)
        return
    from protocolkit.schema import event_json_schema  # noqa: PLC0415 - only this command

    click.echo(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2).decode())


#: The examples' reference evaluation time (src/protocolkit/examples/README.md): every Month 6
#: window has closed and every Month 24 window is still open.
EXAMPLES_AT = "2020-08-10T23:59:59+08:00[Asia/Shanghai]"


@cli.command("demo")
@_store_option
@click.option("--at", "at_text", default=EXAMPLES_AT, show_default=True, metavar="TIME",
              help="Evaluation time (the examples' reference time by default).")
@_format_option
def demo_command(store_url: str | None, at_text: str, fmt: str) -> None:
    """Import the embedded NCT03918265 example histories and evaluate every subject.

    Events already stored are skipped, so it can be run again. Prints one line per subject:
    eligibility, deviations, and the Month 6 values and responses.
    """
    example = resources.files("protocolkit").joinpath("examples/nct03918265.jsonl")
    protocol = load_protocol(default_protocol_path())
    at = _instant_option(at_text, protocol.zone)
    with _open(store_url) as store:
        result = import_jsonl(
            store, example.read_text("utf-8").splitlines(), skip_existing=True
        )
        evaluations = [evaluate(protocol, store.history(protocol.id, s), at=at)
                       for _, s in store.subjects(protocol.id)]
        where = store.location.display
    if fmt == "json":
        click.echo(orjson.dumps([evaluation_to_json(e) for e in evaluations],
                                option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{protocol.id} v{protocol.version}: {len(result.appended)} example events "
               f"imported ({result.skipped} already stored) into {where}; evaluated at {at}\n")
    click.echo(render_summary(evaluations))
    click.echo("\nDetails: protocolkit evaluate SUBJECT --at ... ; evidence: protocolkit explain "
               "SUBJECT RULE --at ...")


def _print_log(store: EventStore, subject: str, study: str | None, fmt: str) -> None:
    studies = [study] if study else store.studies_of(subject)
    if not studies:
        raise click.ClickException(f"no events for subject {subject!r} in {store.location.display}")
    if len(studies) > 1:
        raise click.UsageError(
            f"subject {subject!r} is in several studies ({', '.join(studies)}); give --study"
        )
    recorded = list(store.history(studies[0], subject))
    if fmt == "json":
        for r in recorded:
            click.echo(orjson.dumps({"version": r.version, **event_to_json(r.event)}).decode())
        return
    notes = _fix_notes([r.event for r in recorded])
    rows = []
    for r in recorded:
        e = r.event
        status = notes.get(e.event_id, "")
        rows.append((
            str(r.version), e.occurred_at.format("YYYY-MM-DD HH:mm Z")
            + (" (date)" if e.time_precision == "day" else ""),
            e.recorded_at.in_timezone(e.occurred_at.timezone or "UTC").format("YYYY-MM-DD HH:mm"),
            e.recorded_by, e.event_type, _describe(e), status,
        ))
    click.echo(f"{studies[0]} / {subject}: {len(recorded)} events\n")
    click.echo(_table(("#", "occurred", "recorded", "by", "event", "details", "status"), rows))


def _fix_notes(events: Sequence[Event]) -> dict[Any, str]:
    version = {e.event_id: i + 1 for i, e in enumerate(events)}
    notes: dict[Any, str] = {}
    for e in events:
        if isinstance(e, EntryRetracted):
            notes[e.retracts] = f"retracted by #{version[e.event_id]}"
        elif isinstance(e, EntryCorrected):
            prior = notes.get(e.corrects, "")
            if not prior.startswith("retracted"):
                notes[e.corrects] = f"corrected by #{version[e.event_id]}"
    return notes


def _describe(event: Event) -> str:
    body = event_to_json(event)
    parts = []
    for key, value in body.items():
        if key in ENVELOPE_FIELDS or key == "type" or value is None:
            continue
        if isinstance(value, dict) and "value" in value and "unit" in value:
            text = f"{value['value']} {value['unit']}"
            if value.get("canonical_unit") and value["canonical_unit"] != value["unit"]:
                text += f" (= {value['canonical_value']} {value['canonical_unit']})"
            if value.get("status") == "implausible":
                text += " [implausible: data query]"
            parts.append(f"{key}={text}")
        else:
            shown = orjson.dumps(value).decode() if isinstance(value, dict) else value
            parts.append(f"{key}={shown}")
    return " ".join(parts)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status instead of exiting (for tests and embedding)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="protocolkit",
                 standalone_mode=False)
    except ProtocolKitError as exc:
        click.echo(f"protocolkit: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        exc.show()
        return EX_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except Exception:
        traceback.print_exc()
        click.echo("protocolkit: internal error (a bug): please report it with the trace above",
                   err=True)
        return EX_SOFTWARE
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
