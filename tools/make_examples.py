"""Generate the example study history of NCT03918265 that ``protocolkit demo`` imports.

The output is ``src/protocolkit/examples/nct03918265.jsonl``: twelve subjects of the site
Peking Union Medical College Hospital (``PUMCH``, zone Asia/Shanghai), each a small history
built with the protocolkit event classes and written with :func:`protocolkit.serde.write_jsonl`.
What each subject shows, and the verdicts expected under the sponsor's decisions (D1-D8), are
in ``src/protocolkit/examples/README.md``; keep the two in step.

The output is deterministic: event ids are uuid5 of (study, subject, sequence number within the
subject), every instant is written out here, nothing reads the clock and nothing is random. In
the file, subjects follow one another in id order and each subject's events are in record-time
order (``recorded_at``, then ``occurred_at``), the order in which the log would have grown.

Run from the project root::

    PYTHONPATH=src .venv/bin/python tools/make_examples.py           # (re)write the file
    PYTHONPATH=src .venv/bin/python tools/make_examples.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum

from protocolkit import events as ev
from protocolkit.serde import write_jsonl
from protocolkit.units import Quantity, measure

STUDY = "NCT03918265"
SITE = "PUMCH"
SITE_NAME = "Peking Union Medical College Hospital"
ZONE = "Asia/Shanghai"
UTC = "UTC"
CONSENT_FORM = "ICF v1.0 (2019-04-10)"
DRUG = "tacrolimus"
ARM = "tacrolimus 1 mg bid"
#: The namespace of every event id of this file.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://clinicaltrials.gov/study/NCT03918265")

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "src" / "protocolkit" / "examples" / "nct03918265.jsonl"

# LOINC codes (src/protocolkit/data/analytes.toml).
HB = "718-7"
PLT = "777-3"
RETIC = "4679-7"
TAC = "11253-2"
TAC_TROUGH = "77348-1"
_TESTS = {HB: "Haemoglobin", PLT: "Platelets", RETIC: "Reticulocytes/100 erythrocytes"}
_UNITS = {HB: "g/L", PLT: "10*9/L", RETIC: "%"}
LABORATORY = "PUMCH central laboratory"

When = int | dt.date
Value = str | tuple[str, str]


class History:
    """The events of one subject, built in clinical order and numbered as they are added."""

    def __init__(self, number: int, day1: dt.date | None = None) -> None:
        self.number = number
        self.subject = f"{SITE}-{number:03d}"
        #: Day 1: the date of the first dose in the site's zone (D1); None if never dosed.
        self.day1 = day1
        self.events: list[ev.Event] = []

    # --- time ---------------------------------------------------------------------------

    def date(self, when: When) -> dt.date:
        """The calendar date of a study day (CDISC: no Day 0) or of a date given as such."""
        if isinstance(when, dt.date):
            return when
        if when == 0 or self.day1 is None:
            raise ValueError(f"{self.subject}: no study day {when}")
        return self.day1 + dt.timedelta(days=when - 1 if when > 0 else when)

    def at(self, when: When, clock: str) -> pendulum.DateTime:
        """The instant of wall-clock ``HH:MM`` on ``when``, in the site's zone."""
        day = self.date(when)
        hour, minute = (int(part) for part in clock.split(":"))
        return pendulum.datetime(day.year, day.month, day.day, hour, minute, tz=ZONE)

    def midnight(self, when: When) -> pendulum.DateTime:
        """00:00 of ``when`` in the site's zone: the instant of a date-only event."""
        day = self.date(when)
        return pendulum.datetime(day.year, day.month, day.day, tz=ZONE)

    # --- events -------------------------------------------------------------------------

    def add(
        self,
        cls: type[ev.Event],
        occurred: pendulum.DateTime,
        recorded: pendulum.DateTime,
        by: str,
        source: str = "edc",
        **fields: Any,
    ) -> ev.Event:
        """Append one event; its id is uuid5 of (study, subject, sequence number)."""
        sequence = len(self.events) + 1
        event = cls(
            event_id=uuid.uuid5(NAMESPACE, f"{STUDY}/{self.subject}/{sequence}"),
            study=STUDY,
            subject=self.subject,
            occurred_at=occurred,
            recorded_at=recorded,
            recorded_by=by,
            source=source,
            **fields,
        )
        self.events.append(event)
        return event

    def in_record_order(self) -> list[ev.Event]:
        """The events as the log learned them: by record time, then clinical time."""
        order = {id(e): i for i, e in enumerate(self.events)}
        return sorted(self.events, key=lambda e: (e.recorded_at, e.occurred_at, order[id(e)]))

    # --- building blocks ----------------------------------------------------------------

    def consent(self, when: When, clock: str | None, *, recorded: pendulum.DateTime | None = None,
                by: str = "dr.zhang") -> ev.Event:
        """Written consent; ``clock=None`` records a form that is dated but not timed."""
        if clock is None:
            occurred = self.midnight(when)
            assert recorded is not None, "a date-only consent is entered later"
            return self.add(ev.ConsentSigned, occurred, recorded, by, form_version=CONSENT_FORM,
                            time_precision=ev.TimePrecision.DAY)
        occurred = self.at(when, clock)
        return self.add(ev.ConsentSigned, occurred, recorded or occurred.add(minutes=10), by,
                        form_version=CONSENT_FORM)

    def register(self, when: When, clock: str) -> ev.Event:
        occurred = self.at(when, clock)
        return self.add(ev.SubjectRegistered, occurred, occurred.add(minutes=5), "dr.zhang",
                        site=SITE, screening_number=f"SCR-{self.number:03d}", time_zone=ZONE)

    def visit(self, when: When, clock: str, name: str) -> ev.Event:
        occurred = self.at(when, clock)
        return self.add(ev.VisitOccurred, occurred, occurred.add(minutes=15), "nurse.li",
                        visit=name)

    def history_taken(
        self,
        when: When,
        clock: str,
        *,
        born: dt.date,
        sex: str,
        condition: str,
        icd10: str,
        lines: tuple[tuple[str, str, str], tuple[str, str, str]],
        other_disease: bool = False,
    ) -> None:
        """Demographics, diagnosis, prior lines 1 and 2, other haematological disease."""
        t = self.at(when, clock)
        rec = t.add(minutes=30)
        self.add(ev.DemographicsRecorded, t, rec, "dr.zhang", date_of_birth=born, sex=sex)
        self.add(ev.DiagnosisRecorded, t, rec, "dr.zhang", condition=condition,
                 code_system="ICD-10", code=icd10)
        for line, (therapy, response, tolerance) in enumerate(lines, start=1):
            self.add(ev.PriorTherapyRecorded, t, rec, "dr.zhang", line=line, therapy=therapy,
                     response=response, tolerance=tolerance)
        self.add(ev.OtherHaematologicalDiseaseAssessed, t, rec, "dr.zhang",
                 present=other_disease)

    def ecog(self, when: When, clock: str, score: int) -> ev.Event:
        t = self.at(when, clock)
        return self.add(ev.EcogAssessed, t, t.add(minutes=20), "dr.zhang", score=score)

    def female(self, when: When, clock: str, *, childbearing: bool,
               pregnancy_test: str | None = None) -> None:
        """Childbearing potential, lactation and (if given) a urine hCG at screening."""
        t = self.at(when, clock)
        rec = t.add(minutes=30)
        self.add(ev.ChildbearingPotentialAssessed, t, rec, "dr.zhang",
                 childbearing_potential=childbearing)
        self.add(ev.LactationAssessed, t, rec, "dr.zhang", lactating=False)
        if pregnancy_test is not None:
            drawn = t.add(minutes=20)
            self.add(ev.PregnancyTestResulted, drawn, drawn.add(hours=2), "lab.central",
                     "lab:central", result=pregnancy_test, specimen="urine")

    def labs(
        self,
        drawn: pendulum.DateTime,
        specimen: str,
        *,
        hb: Value | None = None,
        plt: Value | None = None,
        retic: Value | None = None,
        after: dt.timedelta = dt.timedelta(hours=3, minutes=20),
        zone: str = ZONE,
        by: str = "lab.central",
        source: str = "lab:central",
    ) -> list[ev.Event]:
        """Results of one draw (same specimen id); ``zone=UTC`` for the lab's UTC stamps."""
        made = []
        for loinc, value in ((HB, hb), (PLT, plt), (RETIC, retic)):
            if value is None:
                continue
            number, unit = value if isinstance(value, tuple) else (value, _UNITS[loinc])
            occurred = drawn.in_timezone(zone)
            made.append(self.add(
                ev.LabResulted, occurred, occurred + after, by, source, loinc=loinc,
                result=measure(loinc, number, unit), test=_TESTS[loinc],
                specimen_id=specimen, laboratory=LABORATORY,
            ))
        return made

    def dose(self, given: pendulum.DateTime, recorded: pendulum.DateTime, *, mg: str = "1",
             by: str = "nurse.li", source: str = "edc") -> ev.Event:
        return self.add(ev.DoseAdministered, given, recorded, by, source, drug=DRUG,
                        dose=Quantity(mg, "mg"), route="oral")

    def enrol(self, when: When, clock: str) -> None:
        """Enrolment and the starting regimen, 1 mg twice daily (D3)."""
        t = self.at(when, clock)
        self.add(ev.SubjectEnrolled, t, t.add(minutes=10), "dr.zhang", arm=ARM)
        t = t.add(minutes=15)
        self.add(ev.RegimenPrescribed, t, t.add(minutes=5), "dr.zhang", drug=DRUG,
                 dose=Quantity("1", "mg"), frequency="BID", route="oral")

    def day_one(self, *, labs_at: str, hb: Value, plt: Value, retic: Value | None = None,
                first_mg: str = "1") -> None:
        """Day 1: baseline draw before the first dose (D4), first dose in clinic, evening dose.

        The evening dose, taken at home, is entered from the diary at the Day 8 visit.
        """
        self.visit(1, "07:45", "day1")
        self.labs(self.at(1, labs_at), f"{self.subject}-D001", hb=hb, plt=plt, retic=retic)
        first = self.at(1, "09:30")
        self.dose(first, first.add(minutes=5), mg=first_mg, by="pharmacy", source="pharmacy")
        self.dose(self.at(1, "20:00"), self.at(8, "08:20"))

    def trough(
        self,
        day: int,
        *,
        level: str,
        prev: tuple[int, str],
        draw: str,
        next_dose: str | None = "08:10",
        unit: str = "ng/mL",
        loinc: str = TAC_TROUGH,
        mg: str = "1",
        lab_zone: str = ZONE,
        visit: str | None = None,
    ) -> ev.Event:
        """A trough sample: the dose before it, the draw, the dose after it, the level.

        ``prev`` is the (study day, clock) of the last dose before the draw, taken at home and
        entered from the diary at the visit; the next dose is taken in clinic after the draw.
        """
        drawn = self.at(day, draw)
        if visit is not None:
            self.visit(day, draw, visit)
        self.dose(self.at(*prev), drawn.add(minutes=35), mg=mg)
        sample = f"{self.subject}-D{day:03d}-TAC"
        self.add(ev.SampleDrawn, drawn, drawn.add(minutes=5), "nurse.li", sample_id=sample,
                 purpose="trough")
        if next_dose is not None:
            given = self.at(day, next_dose)
            self.dose(given, given.add(minutes=10), mg=mg)
        occurred = drawn.in_timezone(lab_zone)
        return self.add(ev.DrugLevelResulted, occurred, occurred.add(hours=6, minutes=40),
                        "lab.central", "lab:central", drug=DRUG, loinc=loinc,
                        result=measure(loinc, level, unit), sample_id=sample,
                        labelled_trough=True)


# --- the subjects -------------------------------------------------------------------------

STEROIDS = "prednisone"


def subject_001() -> History:
    """AIHA, eligible, 1 mg bid, valid troughs in range, Hb rising: complete response."""
    h = History(1, dt.date(2019, 5, 28))
    h.visit(-8, "09:00", "screening")
    h.consent(-8, "09:00")
    h.register(-8, "09:20")
    h.history_taken(-8, "09:40", born=dt.date(1975, 3, 12), sex="M", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "partial", "intolerant"),
                                          ("rituximab", "none", "tolerated")))
    h.ecog(-8, "10:00", 1)
    h.labs(h.at(-8, "10:15"), f"{h.subject}-SCR", hb="68", plt="212")
    h.enrol(-1, "15:00")
    h.day_one(labs_at="08:00", hb="72", plt="205")
    h.trough(8, level="6.8", prev=(7, "20:00"), draw="07:45", visit="week1")
    h.labs(h.at(8, "07:45"), f"{h.subject}-D008", hb="75")
    # Exactly 13 h after the evening dose: still a valid trough (D3, inclusive).
    h.trough(29, level="7.9", prev=(28, "19:30"), draw="08:30", next_dose="08:40",
             visit="week4")
    h.labs(h.at(29, "08:30"), f"{h.subject}-D029", hb="88")
    # The central lab stamps this level in UTC: drawn 07:40 local = 23:40 UTC on Day 84's date.
    h.trough(85, level="8.4", prev=(84, "20:00"), draw="07:40", loinc=TAC, lab_zone=UTC,
             visit="week12")
    h.labs(h.at(85, "07:40"), f"{h.subject}-D085", hb="105")
    h.trough(183, level="7.2", prev=(182, "20:00"), draw="07:50", visit="month6")
    h.labs(h.at(183, "07:50"), f"{h.subject}-D183", hb="126", plt="231")
    return h


def subject_002() -> History:
    """PRCA, date-only consent, transfusion-dependent at start: partial response."""
    h = History(2, dt.date(2019, 6, 18))
    # The consent form is dated 2019-06-10 (Day -8) but not timed; nothing else that day.
    h.consent(-8, None, recorded=h.at(-7, "08:45"))
    h.register(-7, "08:50")
    h.visit(-7, "09:00", "screening")
    h.history_taken(-7, "09:10", born=dt.date(1961, 2, 27), sex="F", condition="PRCA",
                    icd10="D60.0", lines=((STEROIDS, "none", "tolerated"),
                                          ("cyclosporine", "partial", "intolerant")))
    h.female(-7, "09:40", childbearing=False)
    h.ecog(-7, "09:50", 1)
    h.labs(h.at(-7, "10:00"), f"{h.subject}-SCR", hb="66", plt="240", retic="0.1")
    h.enrol(-1, "14:00")
    h.day_one(labs_at="08:05", hb="62", plt="236", retic="0.1")
    for day in (4, 25, 46):  # red cells every three weeks until the marrow recovers
        given = h.at(day, "10:00")
        h.add(ev.TransfusionGiven, given, given.add(hours=3), "nurse.li", product="RBC",
              amount=Quantity("300", "mL"))
    # The local analyser reports tacrolimus in ug/L (= ng/mL, D6).
    h.trough(8, level="6.1", unit="ug/L", prev=(7, "20:00"), draw="07:40", visit="week1")
    h.labs(h.at(8, "07:40"), f"{h.subject}-D008", hb="84", retic="0.2")  # 4 days after RBC
    h.trough(29, level="7.0", prev=(28, "20:00"), draw="07:35", visit="week4")
    h.labs(h.at(29, "07:35"), f"{h.subject}-D029", hb="80", retic="0.3")  # 4 days after RBC
    h.visit(85, "08:00", "week12")
    h.labs(h.at(85, "08:05"), f"{h.subject}-D085", hb="96", retic="0.5")
    h.trough(180, level="8.2", prev=(179, "20:00"), draw="07:45", visit="month6")
    h.labs(h.at(180, "07:45"), f"{h.subject}-D180", hb="112", plt="251", retic="0.7")
    # A reticulocyte recheck from another draw: not the Month 6 sample's reticulocytes (D8).
    h.visit(187, "08:30", "unscheduled")
    h.labs(h.at(187, "08:40"), f"{h.subject}-D187", retic="1.3")
    return h


def subject_003() -> History:
    """Evans syndrome, both lineages; platelet response confirmed 9 days later."""
    h = History(3, dt.date(2019, 7, 9))
    h.visit(-6, "09:00", "screening")
    h.consent(-6, "09:00")
    h.register(-6, "09:15")
    h.history_taken(-6, "09:30", born=dt.date(1985, 4, 21), sex="F", condition="EVANS",
                    icd10="D69.41", lines=((STEROIDS, "partial", "intolerant"),
                                           ("rituximab", "none", "tolerated")))
    h.female(-6, "09:50", childbearing=True, pregnancy_test="negative")
    h.ecog(-6, "10:20", 1)
    h.labs(h.at(-6, "10:30"), f"{h.subject}-SCR", hb="84", plt="21")
    h.enrol(-1, "16:00")
    # Baseline platelets reported per microlitre: 18000 /uL = 18 x10^9/L (D6).
    h.day_one(labs_at="08:05", hb="86", plt=("18000", "/uL"))
    # Exactly 11 h after the evening dose: a valid trough (D3, inclusive).
    h.trough(8, level="5.4", prev=(7, "20:30"), draw="07:30", next_dose="07:50", visit="week1")
    h.labs(h.at(8, "07:30"), f"{h.subject}-D008", hb="90", plt="24")
    h.trough(29, level="6.6", prev=(28, "20:00"), draw="07:45", visit="week4")
    h.labs(h.at(29, "07:45"), f"{h.subject}-D029", hb="98", plt="35")
    h.visit(85, "08:00", "week12")
    h.labs(h.at(85, "08:10"), f"{h.subject}-D085", hb="108", plt="52")
    h.trough(183, level="7.5", prev=(182, "20:00"), draw="08:00", next_dose="08:20",
             visit="month6")
    # Month 6 and the confirmation count: US-style units, stamped by the central lab in UTC.
    h.labs(h.at(183, "08:15"), f"{h.subject}-D183", hb=("12.4", "g/dL"),
           plt=("64000", "/uL"), zone=UTC)
    h.visit(192, "08:10", "unscheduled")
    h.labs(h.at(192, "08:20"), f"{h.subject}-D192", hb=("12.6", "g/dL"),
           plt=("71", "10*3/uL"), zone=UTC)
    return h


def subject_004() -> History:
    """Screen failure: isolated ITP is not an eligible diagnosis (D2)."""
    h = History(4)
    day = dt.date(2019, 7, 15)
    h.visit(day, "09:00", "screening")
    h.consent(day, "09:00")
    h.register(day, "09:10")
    h.history_taken(day, "09:20", born=dt.date(1963, 9, 30), sex="F", condition="ITP",
                    icd10="D69.3", lines=((STEROIDS, "none", "tolerated"),
                                          ("rituximab", "none", "tolerated")))
    h.female(day, "09:40", childbearing=False)
    h.ecog(day, "09:50", 1)
    h.labs(h.at(day, "10:00"), f"{h.subject}-SCR", hb="128", plt="12")
    t = h.at(dt.date(2019, 7, 16), "16:00")
    h.add(ev.SubjectWithdrawn, t, t.add(minutes=10), "dr.zhang",
          reason="screen failure: isolated ITP (not AIHA, PRCA or Evans syndrome)")
    return h


def subject_005() -> History:
    """Screen failure: consent signed on the 81st birthday (D2, age on the consent date)."""
    h = History(5)
    day = dt.date(2019, 7, 29)
    h.visit(day, "09:00", "screening")
    h.consent(day, "09:00")
    h.register(day, "09:15")
    h.history_taken(day, "09:30", born=dt.date(1938, 7, 29), sex="M", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "none", "intolerant"),
                                          ("cyclophosphamide", "none", "tolerated")))
    h.ecog(day, "09:50", 2)
    h.labs(h.at(day, "10:00"), f"{h.subject}-SCR", hb="79", plt="188")
    t = h.at(dt.date(2019, 7, 30), "11:00")
    h.add(ev.SubjectWithdrawn, t, t.add(minutes=10), "dr.zhang",
          reason="screen failure: aged 81 at consent (18-80)")
    return h


def subject_006() -> History:
    """Screening incomplete: no ECOG recorded, never enrolled or dosed: pending."""
    h = History(6)
    day = dt.date(2019, 8, 12)
    h.visit(day, "09:00", "screening")
    h.consent(day, "09:00")
    h.register(day, "09:10")
    h.history_taken(day, "09:30", born=dt.date(1969, 11, 3), sex="M", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "none", "tolerated"),
                                          ("rituximab", "partial", "intolerant")))
    h.labs(h.at(day, "10:00"), f"{h.subject}-SCR", hb="71", plt="254")
    return h


def subject_007() -> History:
    """Screening blood drawn before consent on Day -28, then dosed: PD-ICF."""
    h = History(7, dt.date(2019, 9, 16))
    # Routine bloods at 08:10 were also sent as the screening sample; consent came at 10:30.
    drawn = h.at(-28, "08:10")
    h.add(ev.SampleDrawn, drawn, drawn.add(minutes=5), "nurse.li",
          sample_id=f"{h.subject}-SCR", purpose="screening")
    h.labs(drawn, f"{h.subject}-SCR", hb="90", plt="188")
    h.visit(-28, "10:30", "screening")
    h.consent(-28, "10:30")
    h.register(-28, "10:45")
    h.history_taken(-28, "10:50", born=dt.date(1990, 1, 15), sex="M", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "none", "tolerated"),
                                          ("rituximab", "none", "intolerant")))
    h.ecog(-28, "11:00", 0)  # Day -28: the oldest fresh day (D8, inclusive)
    h.enrol(-1, "15:30")
    h.day_one(labs_at="08:00", hb="92", plt="190")
    h.trough(8, level="6.2", prev=(7, "20:00"), draw="07:40", visit="week1")
    h.labs(h.at(8, "07:40"), f"{h.subject}-D008", hb="93")
    h.trough(29, level="7.4", prev=(28, "20:00"), draw="07:50", visit="week4")
    h.labs(h.at(29, "07:50"), f"{h.subject}-D029", hb="97")
    h.trough(183, level="6.7", prev=(182, "20:00"), draw="07:40", visit="month6")
    h.labs(h.at(183, "07:40"), f"{h.subject}-D183", hb="105", plt="201")
    return h


def subject_008() -> History:
    """ECOG 2 at screening, 3 on re-assessment before enrolment, dosed anyway: PD-ELIG."""
    h = History(8, dt.date(2019, 9, 24))
    h.visit(-14, "09:00", "screening")
    h.consent(-14, "09:00")
    h.register(-14, "09:15")
    h.history_taken(-14, "09:30", born=dt.date(1952, 5, 6), sex="M", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "partial", "intolerant"),
                                          ("cyclosporine", "none", "tolerated")))
    h.ecog(-14, "10:00", 2)
    h.labs(h.at(-14, "10:10"), f"{h.subject}-SCR", hb="80", plt="160")
    h.visit(-2, "10:00", "unscheduled")
    h.ecog(-2, "10:10", 3)  # the latest on or before enrolment counts (D2)
    h.enrol(-1, "15:00")
    h.day_one(labs_at="08:10", hb="78", plt="158")
    h.trough(8, level="7.1", prev=(7, "20:00"), draw="07:45", visit="week1")
    h.trough(29, level="8.3", prev=(28, "20:00"), draw="07:40", visit="week4")
    h.labs(h.at(29, "07:40"), f"{h.subject}-D029", hb="83")
    h.visit(85, "08:30", "week12")
    h.labs(h.at(85, "08:40"), f"{h.subject}-D085", hb="86")
    given = h.at(179, "14:00")
    h.add(ev.TransfusionGiven, given, given.add(hours=4), "nurse.li", product="RBC",
          amount=Quantity("300", "mL"))
    h.trough(183, level="6.4", prev=(182, "20:00"), draw="07:55", visit="month6")
    h.labs(h.at(183, "07:55"), f"{h.subject}-D183", hb="84", plt="170")  # 4 days after RBC
    return h


def subject_009() -> History:
    """A 'trough' 2 h post dose (PD-PK), two high steady-state troughs (PD-TDM), titration."""
    h = History(9, dt.date(2019, 10, 15))
    h.visit(-10, "09:00", "screening")
    h.consent(-10, "09:00")
    h.register(-10, "09:10")
    h.history_taken(-10, "09:20", born=dt.date(1980, 12, 1), sex="M", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "none", "intolerant"),
                                          ("rituximab", "none", "tolerated")))
    h.ecog(-10, "09:50", 1)
    h.labs(h.at(-10, "10:00"), f"{h.subject}-SCR", hb="69", plt="226")
    h.enrol(-1, "14:30")
    h.day_one(labs_at="08:00", hb="70", plt="220")
    h.trough(8, level="9.6", prev=(7, "20:00"), draw="07:45", visit="week1")
    # The morning dose was taken at home at 08:00 and the "trough" drawn at 10:05.
    h.trough(15, level="14.2", prev=(15, "08:00"), draw="10:05", next_dose=None,
             visit="week2")
    h.trough(22, level="16.8", prev=(21, "20:00"), draw="07:40", visit="week3")
    h.trough(29, level="21.4", prev=(28, "20:00"), draw="07:45", visit="week4")
    h.labs(h.at(29, "07:45"), f"{h.subject}-D029", hb="79")
    onset = h.at(27, "18:00")
    h.add(ev.AdverseEventReported, onset, h.at(29, "09:00"), "dr.zhang", term="Tremor",
          grade=1)
    changed = h.at(29, "16:30")
    h.add(ev.DoseChanged, changed, changed.add(minutes=5), "dr.zhang", drug=DRUG,
          dose=Quantity("0.5", "mg"), frequency="BID",
          reason="trough 21.4 ng/mL above the 5-10 ng/mL target; tremor")
    # 39 h after the change: a valid trough, but not yet at steady state (D3: 72 h).
    h.trough(31, level="11.2", prev=(30, "20:00"), draw="07:45", mg="0.5",
             visit="unscheduled")
    h.dose(h.at(29, "20:00"), h.at(31, "08:20"), mg="0.5")
    h.trough(36, level="8.1", prev=(35, "20:00"), draw="07:50", mg="0.5", visit="week5")
    h.trough(85, level="7.4", prev=(84, "20:00"), draw="07:40", mg="0.5", visit="week12")
    h.labs(h.at(85, "07:40"), f"{h.subject}-D085", hb="86")
    h.trough(183, level="6.9", prev=(182, "20:00"), draw="07:50", mg="0.5", visit="month6")
    h.labs(h.at(183, "07:50"), f"{h.subject}-D183", hb="94", plt="236")
    return h


def subject_010() -> History:
    """First dose 2 mg (PD-DOSE); a missed evening dose before a scheduled trough (PD-PK)."""
    h = History(10, dt.date(2019, 11, 5))
    h.visit(-9, "09:00", "screening")
    h.consent(-9, "09:00")
    h.register(-9, "09:10")
    h.history_taken(-9, "09:20", born=dt.date(1957, 3, 18), sex="F", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "partial", "intolerant"),
                                          ("azathioprine", "none", "tolerated")))
    h.female(-9, "09:40", childbearing=False)
    h.ecog(-9, "09:50", 1)
    h.labs(h.at(-9, "10:00"), f"{h.subject}-SCR", hb="77", plt="271")
    h.enrol(-1, "15:00")
    # Dispensing error: two 1 mg capsules given as the first dose.
    h.day_one(labs_at="08:05", hb="76", plt="266", first_mg="2")
    h.trough(8, level="7.7", prev=(7, "20:00"), draw="07:45", visit="week1")
    h.trough(29, level="8.8", prev=(28, "20:00"), draw="07:40", visit="week4")
    h.labs(h.at(29, "07:40"), f"{h.subject}-D029", hb="80")
    morning = h.at(40, "08:00")
    h.dose(morning, h.at(41, "08:15"))
    due = h.at(40, "20:00")
    h.add(ev.DoseMissed, due, h.at(41, "08:15"), "nurse.li", drug=DRUG,
          reason="forgot while travelling")
    # The scheduled week-6 trough is drawn anyway: 23 h 40 min after the last dose taken.
    drawn = h.at(41, "07:40")
    h.visit(41, "07:40", "week6")
    sample = f"{h.subject}-D041-TAC"
    h.add(ev.SampleDrawn, drawn, drawn.add(minutes=5), "nurse.li", sample_id=sample,
          purpose="trough")
    given = h.at(41, "08:10")
    h.dose(given, given.add(minutes=10))
    h.add(ev.DrugLevelResulted, drawn, drawn.add(hours=6, minutes=40), "lab.central",
          "lab:central", drug=DRUG, loinc=TAC_TROUGH,
          result=measure(TAC_TROUGH, "2.9", "ng/mL"), sample_id=sample, labelled_trough=True)
    h.visit(85, "08:30", "week12")
    h.labs(h.at(85, "08:40"), f"{h.subject}-D085", hb="84")
    h.trough(183, level="7.1", prev=(182, "20:00"), draw="07:45", visit="month6")
    h.labs(h.at(183, "07:45"), f"{h.subject}-D183", hb="89", plt="268")
    return h


def subject_011() -> History:
    """Positive pregnancy test on Day 120; two doses after it was known: PD-SAFE."""
    h = History(11, dt.date(2019, 11, 26))
    h.visit(-10, "09:00", "screening")
    h.consent(-10, "09:00")
    h.register(-10, "09:10")
    h.history_taken(-10, "09:20", born=dt.date(1991, 6, 9), sex="F", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "none", "tolerated"),
                                          ("rituximab", "none", "tolerated")))
    h.female(-10, "09:40", childbearing=True, pregnancy_test="negative")
    h.ecog(-10, "10:10", 0)
    h.labs(h.at(-10, "10:20"), f"{h.subject}-SCR", hb="90", plt="238")
    h.enrol(-1, "15:00")
    h.day_one(labs_at="08:00", hb="88", plt="241")
    h.trough(8, level="6.5", prev=(7, "20:00"), draw="07:45", visit="week1")
    h.trough(29, level="7.7", prev=(28, "20:00"), draw="07:40", visit="week4")
    h.labs(h.at(29, "07:40"), f"{h.subject}-D029", hb="97")
    h.trough(85, level="8.0", prev=(84, "20:00"), draw="07:50", visit="week12")
    h.labs(h.at(85, "07:50"), f"{h.subject}-D085", hb="109")
    # Day 120: morning dose at home, then a urine hCG (late period), resulted at 11:30.
    h.dose(h.at(120, "08:00"), h.at(121, "09:00"))
    h.visit(120, "09:00", "unscheduled")
    tested = h.at(120, "09:10")
    h.add(ev.PregnancyTestResulted, tested, h.at(120, "11:30"), "lab.central", "lab:central",
          result="positive", specimen="urine")
    # The investigator saw the result the next morning; two more doses were taken meanwhile.
    h.dose(h.at(120, "20:00"), h.at(121, "09:00"))
    h.dose(h.at(121, "08:00"), h.at(121, "09:00"))
    h.add(ev.AdverseEventReported, tested, h.at(121, "10:00"), "dr.zhang", term="Pregnancy",
          serious=False, category="pregnancy")
    stop = h.at(121, "10:15")
    h.add(ev.TreatmentDiscontinued, stop, stop.add(minutes=5), "dr.zhang",
          reason="pregnancy")
    h.visit(183, "08:30", "month6")
    h.labs(h.at(183, "08:40"), f"{h.subject}-D183", hb="121", plt="243")
    return h


def subject_012() -> History:
    """Month 6 visit missed (COVID-19), a corrected and a retracted Hb: PD-WIN1, missing."""
    h = History(12, dt.date(2019, 12, 17))
    h.visit(-12, "09:00", "screening")
    h.consent(-12, "09:00")
    h.register(-12, "09:10")
    h.history_taken(-12, "09:20", born=dt.date(1966, 10, 22), sex="M", condition="AIHA",
                    icd10="D59.1", lines=((STEROIDS, "partial", "intolerant"),
                                          ("rituximab", "none", "tolerated")))
    h.ecog(-12, "09:50", 1)
    h.labs(h.at(-12, "10:00"), f"{h.subject}-SCR", hb="74", plt="203")
    h.enrol(-1, "15:00")
    h.day_one(labs_at="08:00", hb="75", plt="199")
    h.trough(8, level="6.0", prev=(7, "20:00"), draw="07:40", visit="week1")
    h.trough(29, level="7.3", prev=(28, "20:00"), draw="07:45", visit="week4")
    h.labs(h.at(29, "07:45"), f"{h.subject}-D029", hb="81")
    h.trough(85, level="8.6", prev=(84, "20:00"), draw="07:45", visit="week12")
    # Keyed into the EDC by hand from the lab report; source data verification found 87.
    typed = h.labs(h.at(85, "07:45"), f"{h.subject}-D085", hb="78", by="nurse.li",
                   source="edc", after=dt.timedelta(hours=5))[0]
    fixed = h.at(89, "10:30")
    h.add(ev.EntryCorrected, fixed, fixed, "nurse.li", corrects=typed.event_id,
          changes={"result": {"value": "87", "unit": "g/L"}},
          reason="transcription error: the source lab report reads 87 g/L (SDV by cra.wang)")
    # Day 185: another patient's Hb keyed into this subject's Month 6 form, retracted later.
    wrong = h.labs(h.at(185, "08:20"), f"{h.subject}-D185", hb="118", by="nurse.li",
                   source="edc", after=dt.timedelta(hours=6))[0]
    retracted = h.at(191, "11:00")
    h.add(ev.EntryRetracted, retracted, retracted, "dr.zhang", retracts=wrong.event_id,
          reason="entered in error: the result belongs to another patient")
    # The Month 6 visit, postponed by COVID-19 travel restrictions, took place on Day 198.
    # The central lab stamps it in UTC: 07:20 local on Day 198 is 23:20 UTC on Day 197's date.
    h.trough(198, level="7.6", prev=(197, "20:00"), draw="07:20", next_dose="07:40",
             visit="month6")
    h.labs(h.at(198, "07:20"), f"{h.subject}-D198", hb="116", plt="230", zone=UTC)
    return h


SUBJECTS: tuple[Callable[[], History], ...] = (
    subject_001, subject_002, subject_003, subject_004, subject_005, subject_006,
    subject_007, subject_008, subject_009, subject_010, subject_011, subject_012,
)


def build_events() -> list[ev.Event]:
    """Every event of the example, subject by subject, each in record-time order."""
    return [event for make in SUBJECTS for event in make().in_record_order()]


def render() -> bytes:
    """The bytes of ``nct03918265.jsonl``."""
    return b"".join(write_jsonl(build_events()))


def main(argv: list[str] | None = None) -> int:
    """Write the example file, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from the generator")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write")
    args = parser.parse_args(argv)
    data = render()
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != data:
            print(f"{args.output} is stale: run tools/make_examples.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"wrote {len(data.splitlines())} events to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
