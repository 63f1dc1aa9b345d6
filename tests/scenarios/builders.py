"""A fluent builder of one NCT03918265 subject's history, for the scenario suite.

``Subject()`` starts from a fully eligible baseline subject and every method changes or adds
one thing, returning the builder, so that a scenario reads as "the baseline, except ...":

- a 45-year-old man (born 1978-06-15) with AIHA, registered at a site in ``zone``
  (``Asia/Shanghai`` unless given), consent signed on Day -10 at 09:00;
- screening on Day -10 after consent: demographics, diagnosis, prior line 1 (prednisone,
  partial response, intolerant) and line 2 (rituximab, no response, tolerated), no other
  haematological disease, ECOG 1, screening Hb and platelets;
- enrolled on Day -1; baseline Hb 72 g/L and platelets 210 x10^9/L on Day 1 at 07:30;
- the first tacrolimus dose on Day 1 (``day1``, default 2024-03-11) at 08:00, 1 mg, and the
  second at 20:00 (1 mg twice daily, D3).

Times are given as (study day, "HH:MM") on the site's wall clock; study days follow CDISC (D1:
no Day 0). Every event sits in a named *slot*: the baseline's slots are replaced by the
methods that change them (``ecog(3)`` replaces the ECOG), removed by ``without(...)``, and
read back with ``event(slot)`` (for corrections). Event ids are uuid5 of the subject and the
slot, so a history is the same on every run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from functools import cache
from typing import Any

import pendulum

from protocolkit import events as ev
from protocolkit.engine import Evaluation, evaluate
from protocolkit.rules import Protocol, default_protocol_path, load_protocol
from protocolkit.units import Quantity, measure

STUDY = "NCT03918265"
DRUG = "tacrolimus"
HB, PLT, RETIC = "718-7", "777-3", "4679-7"
TAC_TROUGH = "77348-1"
CANONICAL = {HB: "g/L", PLT: "10*9/L", RETIC: "%"}
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://example.org/protocolkit/scenarios")

When = tuple[int, str]
Value = str | tuple[str, str]


@cache
def protocol() -> Protocol:
    """The embedded NCT03918265 protocol (``rules/nct03918265.protocol``)."""
    return load_protocol(default_protocol_path())


class Subject:
    """One subject's history, built fluently from an eligible baseline."""

    def __init__(self, subject: str = "S-001", *, day1: dt.date = dt.date(2024, 3, 11),
                 zone: str = "Asia/Shanghai") -> None:
        self.subject = subject
        self.day1 = day1
        self.zone = zone
        self._slots: dict[str, list[ev.Event]] = {}
        self._counter = 0
        self.register()
        self.consent()
        self.demographics()
        self.diagnosis()
        self.prior_line(1, "prednisone", "partial", "intolerant")
        self.prior_line(2, "rituximab", "none", "tolerated")
        self.other_disease(False)
        self.ecog(1)
        self.labs(-10, "10:15", hb="70", plt="205", slot="screening labs")
        self.enrol()
        self.labs(1, "07:30", hb="72", plt="210", slot="baseline labs")
        self.dose(1, "08:00")
        self.dose(1, "20:00")

    # --- time -------------------------------------------------------------------------------

    def date(self, day: int | dt.date) -> dt.date:
        """The calendar date of a study day (CDISC: no Day 0), or a date given as such."""
        if isinstance(day, dt.date):
            return day
        if day == 0:
            raise ValueError("there is no study day 0")
        return self.day1 + dt.timedelta(days=day - 1 if day > 0 else day)

    def at(self, day: int | dt.date, clock: str = "12:00") -> pendulum.DateTime:
        """The instant of wall-clock ``HH:MM`` on a study day, in the site's zone."""
        date = self.date(day)
        hour, minute = (int(part) for part in clock.split(":"))
        return pendulum.datetime(date.year, date.month, date.day, hour, minute, tz=self.zone)

    def _when(self, when: When | pendulum.DateTime) -> pendulum.DateTime:
        if isinstance(when, tuple):
            return self.at(*when)
        return when

    # --- slots ------------------------------------------------------------------------------

    def _new(self, cls: type[ev.Event], slot: str, occurred: pendulum.DateTime,
             recorded: pendulum.DateTime | None = None, **fields: Any) -> ev.Event:
        index = len(self._slots.get(slot, ()))
        return cls(
            event_id=uuid.uuid5(NAMESPACE, f"{self.subject}/{slot}/{index}"),
            study=STUDY,
            subject=self.subject,
            occurred_at=occurred,
            recorded_at=recorded if recorded is not None else occurred.add(minutes=10),
            recorded_by="tester",
            source="test",
            **fields,
        )

    def _put(self, slot: str, cls: type[ev.Event], occurred: pendulum.DateTime,
             recorded: pendulum.DateTime | None = None, **fields: Any) -> Subject:
        """Replace ``slot`` with one new event."""
        self._slots.pop(slot, None)
        self._slots[slot] = [self._new(cls, slot, occurred, recorded, **fields)]
        return self

    def _append(self, slot: str, cls: type[ev.Event], occurred: pendulum.DateTime,
                recorded: pendulum.DateTime | None = None, **fields: Any) -> Subject:
        """Add one event to ``slot`` (a draw holds several results)."""
        event = self._new(cls, slot, occurred, recorded, **fields)
        self._slots.setdefault(slot, []).append(event)
        return self

    def _auto(self, kind: str, slot: str | None) -> str:
        if slot is not None:
            return slot
        self._counter += 1
        return f"{kind} #{self._counter}"

    def without(self, *slots: str) -> Subject:
        """Remove the events of ``slots`` (a fact that was never recorded)."""
        for slot in slots:
            del self._slots[slot]
        return self

    def event(self, slot: str, index: int = 0) -> ev.Event:
        """The event held in ``slot`` (the first one unless ``index`` is given)."""
        return self._slots[slot][index]

    def events(self) -> list[ev.Event]:
        """The whole history (in slot order; the engine does not depend on the order)."""
        return [event for events in self._slots.values() for event in events]

    def evaluate(self, *, at: pendulum.DateTime,
                 known_at: pendulum.DateTime | None = None) -> Evaluation:
        """Evaluate NCT03918265 for this subject at ``at`` (as known at ``known_at``)."""
        return evaluate(protocol(), self.events(), at=at, known_at=known_at)

    # --- identity, consent, screening -------------------------------------------------------

    def register(self, day: int = -10, clock: str = "08:30", *,
                 time_zone: str | None = None) -> Subject:
        """The site registration, recording the site's zone (``zone`` unless given)."""
        return self._put("registered", ev.SubjectRegistered, self.at(day, clock), site="SITE-1",
                         screening_number=f"SCR-{self.subject}",
                         time_zone=time_zone or self.zone)

    def consent(self, day: int = -10, clock: str | None = "09:00", *,
                recorded: When | None = None) -> Subject:
        """Written consent; ``clock=None`` records a consent dated but not timed (D5)."""
        if clock is None:
            midnight = self.at(day, "00:00")
            return self._put("consent", ev.ConsentSigned, midnight,
                             self._when(recorded) if recorded else midnight.add(hours=18),
                             form_version="ICF v1.0", time_precision=ev.TimePrecision.DAY)
        return self._put("consent", ev.ConsentSigned, self.at(day, clock),
                         self._when(recorded) if recorded else None, form_version="ICF v1.0")

    def no_consent(self) -> Subject:
        """No consent record at all (D2, D8)."""
        return self.without("consent")

    def demographics(self, born: dt.date = dt.date(1978, 6, 15), sex: str = "M", *,
                     day: int = -10, clock: str = "09:30") -> Subject:
        """Date of birth and sex (default: a man aged 45 at the default consent)."""
        return self._put("demographics", ev.DemographicsRecorded, self.at(day, clock),
                         date_of_birth=born, sex=sex)

    def born(self, date: dt.date) -> Subject:
        """Change only the date of birth."""
        sex = self.event("demographics").sex  # type: ignore[attr-defined]
        return self.demographics(date, str(sex.value))

    def diagnosis(self, condition: str = "AIHA") -> Subject:
        """The diagnosis under study: AIHA, PRCA, EVANS or (ineligible) ITP."""
        return self._put("diagnosis", ev.DiagnosisRecorded, self.at(-10, "09:30"),
                         condition=condition)

    def prior_line(self, line: int, therapy: str, response: str, tolerance: str) -> Subject:
        """Prior line ``line`` (1 = corticosteroids, 2 = second line), replacing the default."""
        return self._put(f"line {line}", ev.PriorTherapyRecorded, self.at(-10, "09:30"),
                         line=line, therapy=therapy, response=response, tolerance=tolerance)

    def other_disease(self, present: bool, condition: str | None = None) -> Subject:
        """Whether another haematological disease (MDS, lymphoma...) is documented."""
        return self._put("other disease", ev.OtherHaematologicalDiseaseAssessed,
                         self.at(-10, "09:30"), present=present, condition=condition)

    def ecog(self, score: int, *, day: int = -10, clock: str = "10:00",
             slot: str = "ecog") -> Subject:
        """An ECOG assessment (replaces the screening ECOG unless another slot is named)."""
        return self._put(slot, ev.EcogAssessed, self.at(day, clock), score=score)

    def female(self, *, childbearing: bool = True, pregnancy_test: str | None = "negative",
               test_day: int = -10, lactating: bool | None = False) -> Subject:
        """Make the subject a woman: childbearing potential, a urine hCG, lactation."""
        born = self.event("demographics").date_of_birth  # type: ignore[attr-defined]
        self.demographics(born, "F")
        self._put("childbearing", ev.ChildbearingPotentialAssessed, self.at(-10, "09:40"),
                  childbearing_potential=childbearing)
        if lactating is not None:
            self._put("lactation", ev.LactationAssessed, self.at(-10, "09:40"),
                      lactating=lactating)
        if pregnancy_test is not None:
            self.pregnancy_test(test_day, "10:05", pregnancy_test, slot="pregnancy test")
        return self

    def pregnancy_test(self, day: int, clock: str, result: str, *,
                       recorded: When | None = None, slot: str | None = None) -> Subject:
        """A urine hCG; the result is known from ``recorded`` (default: 2 h after the draw)."""
        drawn = self.at(day, clock)
        return self._put(self._auto("hcg", slot), ev.PregnancyTestResulted, drawn,
                         self._when(recorded) if recorded else drawn.add(hours=2),
                         result=result, specimen="urine")

    def enrol(self, day: int = -1, clock: str = "15:00") -> Subject:
        """Enrolment and the starting regimen, 1 mg bid."""
        self._put("enrolled", ev.SubjectEnrolled, self.at(day, clock), arm="tacrolimus 1 mg bid")
        return self._put("regimen", ev.RegimenPrescribed, self.at(day, clock).add(minutes=15),
                         drug=DRUG, dose=Quantity("1", "mg"), frequency="BID", route="oral")

    def observation(self, code: str, category: str, *, day: int = -10) -> Subject:
        """A coded observation (``UNABLE-TO-COMPLY`` yes/no, D8)."""
        return self._put(f"observation {code}", ev.ObservationRecorded, self.at(day, "10:30"),
                         code_system="protocol", code=code, category=category)

    # --- treatment --------------------------------------------------------------------------

    def dose(self, day: int, clock: str, mg: str = "1", *,
             recorded: When | None = None) -> Subject:
        """A tacrolimus dose taken at (day, clock); one slot per instant."""
        return self._put(f"dose {day} {clock}", ev.DoseAdministered, self.at(day, clock),
                         self._when(recorded) if recorded else None,
                         drug=DRUG, dose=Quantity(mg, "mg"), route="oral")

    def no_dose(self, day: int, clock: str) -> Subject:
        """Remove a dose of the baseline (never given, and not recorded as missed)."""
        return self.without(f"dose {day} {clock}")

    def missed(self, day: int, clock: str) -> Subject:
        """A scheduled dose recorded as missed (``DoseMissed``)."""
        self._slots.pop(f"dose {day} {clock}", None)
        return self._put(f"missed {day} {clock}", ev.DoseMissed, self.at(day, clock),
                         drug=DRUG, reason="forgot")

    def dose_change(self, day: int, clock: str = "16:00", mg: str = "0.5") -> Subject:
        """A titration (``DoseChanged``) to ``mg`` twice daily."""
        return self._put(f"dose change {day} {clock}", ev.DoseChanged, self.at(day, clock),
                         drug=DRUG, dose=Quantity(mg, "mg"), frequency="BID",
                         reason="trough outside 5-10 ng/mL")

    def trough(self, day: int, level: str, *, drawn: str | None = "08:00",
               hours_after: float | None = None, prev: When | None = None, mg: str = "1",
               unit: str = "ng/mL", next_dose: str | None = None, labelled: bool = True,
               slot: str | None = None) -> Subject:
        """A labelled trough with the dose before it.

        The last dose before the draw is taken at ``prev`` (default: 20:00 the evening
        before) unless a dose or a missed dose is already recorded there. The draw is at
        wall-clock ``drawn`` on ``day``, or, with ``hours_after``, that many hours of elapsed
        (UTC) time after the dose. ``next_dose`` adds the dose taken after the draw.
        """
        prev_day, prev_clock = prev if prev is not None else (day - 1 if day > 1 else day,
                                                               "20:00")
        if (f"dose {prev_day} {prev_clock}" not in self._slots
                and f"missed {prev_day} {prev_clock}" not in self._slots):
            self.dose(prev_day, prev_clock, mg)
        if hours_after is not None:
            given = self.at(prev_day, prev_clock).in_timezone("UTC")
            when = given.add(seconds=round(hours_after * 3600)).in_timezone(self.zone)
        else:
            assert drawn is not None
            when = self.at(day, drawn)
        name = self._auto("trough", slot)
        self._put(name, ev.DrugLevelResulted, when, when.add(hours=6), drug=DRUG,
                  loinc=TAC_TROUGH, result=measure(TAC_TROUGH, level, unit),
                  sample_id=f"{self.subject}-{name}", labelled_trough=labelled)
        if next_dose is not None:
            self.dose(day, next_dose, mg)
        return self

    def transfusion(self, day: int, clock: str = "10:00", product: str = "RBC") -> Subject:
        """A transfusion (red cells unless ``product`` is given)."""
        return self._put(f"transfusion {day} {clock}", ev.TransfusionGiven, self.at(day, clock),
                         product=product, amount=Quantity("300", "mL"))

    # --- results ----------------------------------------------------------------------------

    def labs(self, day: int, clock: str = "08:00", *, hb: Value | None = None,
             plt: Value | None = None, retic: Value | None = None, stamp_zone: str | None = None,
             slot: str | None = None) -> Subject:
        """The results of one draw (same instant, same specimen).

        Values are text in the canonical unit (Hb g/L, platelets 10*9/L, reticulocytes %) or
        (value, UCUM unit) as received. ``stamp_zone="UTC"`` stamps them as a central lab in
        UTC would; they are judged on the site's date all the same (D8).
        """
        name = self._auto("labs", slot)
        self._slots.pop(name, None)
        drawn = self.at(day, clock)
        if stamp_zone is not None:
            drawn = drawn.in_timezone(stamp_zone)
        for loinc, value in ((HB, hb), (PLT, plt), (RETIC, retic)):
            if value is None:
                continue
            number, unit = value if isinstance(value, tuple) else (value, CANONICAL[loinc])
            self._append(name, ev.LabResulted, drawn, drawn.add(hours=3), loinc=loinc,
                         result=measure(loinc, number, unit), specimen_id=f"{self.subject}-{name}")
        return self

    def bleeding(self, day: int, clock: str = "12:00") -> Subject:
        """A bleeding adverse event (overrides a platelet response, D4)."""
        return self._put(f"bleeding {day}", ev.AdverseEventReported, self.at(day, clock),
                         term="Epistaxis", grade=2, category="bleeding")

    # --- corrections ------------------------------------------------------------------------

    def correct(self, slot: str, *, on: When, reason: str | None = "transcription error",
                index: int = 0, name: str | None = None, **changes: Any) -> Subject:
        """Correct the event in ``slot`` (new values in the JSON interchange form, D7)."""
        target = self.event(slot, index)
        when = self.at(*on)
        return self._put(name or f"correction of {slot}", ev.EntryCorrected, when, when,
                         corrects=target.event_id, changes=changes, reason=reason)

    def retract(self, slot: str, *, on: When, reason: str = "entered in error",
                index: int = 0, name: str | None = None) -> Subject:
        """Retract the event in ``slot`` as entered in error (D7)."""
        target = self.event(slot, index)
        when = self.at(*on)
        return self._put(name or f"retraction of {slot}", ev.EntryRetracted, when, when,
                         retracts=target.event_id, reason=reason)


def ids(*events: ev.Event) -> set[str]:
    """The event ids as the engine cites them in evidence."""
    return {str(e.event_id) for e in events}
