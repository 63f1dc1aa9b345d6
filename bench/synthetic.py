"""A deterministic synthetic NCT03918265 study, built with protocolkit's event classes.

Each subject of the single site (PUMCH, zone Asia/Shanghai) gets a realistic history:

- **screening** (3-21 days before Day 1): registration, consent (10 % dated but not timed),
  demographics (ages mostly 18-80, a few outside), for women childbearing potential, lactation
  and a urine hCG, the diagnosis (AIHA, PRCA, Evans syndrome, a few isolated ITP), prior lines
  1 and 2 (mostly refractory, a few responsive and tolerated), other haematological disease,
  ECOG (a few 3), the investigator's UNABLE-TO-COMPLY judgement, height and weight, screening
  labs; about 6 % of subjects fail screening and have nothing more;
- **enrolment** on Day -1 with the regimen (tacrolimus 1 mg BID);
- **treatment**: two doses a day at about 08:00 and 20:00 (1.2 % missed, a few first days with
  one dose or a 2 mg start), troughs on Days 4, 8, 15, 22, 29 and every 28 days, drawn mostly
  11-13 h after the evening dose (8 % outside that span: not a valid trough), levels around
  7 ng/mL in ng/mL, ug/L or pg/mL, a dose change after some out-of-range levels;
- **labs** (haemoglobin in g/L, g/dL or mmol/L; platelets in 10*9/L or 10*3/uL;
  reticulocytes in %) on Day 1 before the first dose, Days 15, 29, then every 28 days, at
  Month 6 and Month 24 (each missed by 5 % of subjects), 30 % stamped in UTC by the central
  laboratory; visits, weights, adverse events (some bleeding), red-cell transfusions,
  concomitant medications;
- **corrections and retractions**: an implausible haemoglobin (a g/dL number sent as g/L)
  corrected 1-3 days later, a dose time corrected, a dose entered twice and the duplicate
  retracted.

Everything comes from ``random.Random(f"{seed}:{index}")``: the same seed gives the same events
(ids included) on every run and machine. A history is cut to exactly the number of events
asked for, in record-time order (a correction is always recorded after what it corrects, so a
cut never orphans one).
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import random
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pendulum

from protocolkit import events as ev
from protocolkit.timeutil import format_instant
from protocolkit.units import Quantity, measure

__all__ = [
    "DEFAULT_SEED",
    "STUDY",
    "evaluation_time",
    "record_order",
    "small_batch",
    "small_event_batches",
    "small_event_plan",
    "study_histories",
    "subject_history",
]

STUDY = "NCT03918265"
SITE = "PUMCH"
ZONE = "Asia/Shanghai"
DRUG = "tacrolimus"
HB, PLT, RETIC = "718-7", "777-3", "4679-7"
TAC_TROUGH = "77348-1"
HEIGHT, WEIGHT = "8302-2", "29463-7"
DEFAULT_SEED = 20190504
#: Day 1 of the first subject; later subjects enter one every few days (accrual).
STUDY_START = dt.date(2019, 6, 3)
SCREEN_FAILURE_RATE = 0.06

_MINUTE = dt.timedelta(minutes=1)
_HOUR = dt.timedelta(hours=1)
_DAY = dt.timedelta(days=1)
_UTC = pendulum.timezone("UTC")
_TZ = pendulum.timezone(ZONE)


class _History:
    """One subject's events, generated in clinical order."""

    def __init__(self, seed: int, index: int) -> None:
        self.rng = random.Random(f"{seed}:{index}")
        self.subject = f"{SITE}-{index + 1:05d}"
        # Accrual: a subject every 3-4 days over two years, then again.
        self.day1 = STUDY_START + dt.timedelta(days=(index * 7 // 2) % 730)
        # Times are built as naive wall-clock times of the site (Asia/Shanghai keeps +08:00
        # all year, so wall-clock arithmetic is elapsed time) and made aware in add():
        # pendulum's own arithmetic is ten times slower.
        self.midnight = dt.datetime(self.day1.year, self.day1.month, self.day1.day)
        self.events: list[ev.Event] = []

    # --- time and ids ---------------------------------------------------------------------

    def at(self, day: int, hour: int, minute: int = 0) -> dt.datetime:
        """Wall clock on a study day (CDISC: Day -1 is the day before Day 1, no Day 0)."""
        offset = day - 1 if day > 0 else day
        return self.midnight + dt.timedelta(days=offset, hours=hour, minutes=minute)

    def jitter(self, when: dt.datetime, minutes: int) -> dt.datetime:
        return when + self.rng.randint(-minutes, minutes) * _MINUTE

    def later(self, when: dt.datetime, low_min: float, high_min: float) -> dt.datetime:
        return when + dt.timedelta(minutes=self.rng.uniform(low_min, high_min))

    def add(self, cls: type[ev.Event], occurred: dt.datetime, recorded: dt.datetime, by: str,
            source: str = "edc", **fields: Any) -> ev.Event:
        event = cls(
            event_id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            study=STUDY, subject=self.subject, occurred_at=_aware(occurred),
            recorded_at=_aware(recorded), recorded_by=by, source=source, **fields,
        )
        self.events.append(event)
        return event

    # --- screening --------------------------------------------------------------------------

    def screening(self) -> dict[str, Any]:
        rng = self.rng
        day = -rng.randint(3, 21)
        start = self.at(day, 8, 30)
        self.add(ev.SubjectRegistered, start, start + 5 * _MINUTE, "dr.zhang", site=SITE,
                 screening_number=f"SCR-{self.subject}", time_zone=ZONE)
        consent = self.at(day, 9)
        if rng.random() < 0.10:  # a form dated but not timed, entered that evening
            midnight = self.at(day, 0)
            self.add(ev.ConsentSigned, midnight, midnight + 18 * _HOUR, "dr.zhang",
                     form_version="ICF v1.0", time_precision=ev.TimePrecision.DAY)
        else:
            self.add(ev.ConsentSigned, consent, consent + 10 * _MINUTE, "dr.zhang",
                     form_version="ICF v1.0")
        t = self.at(day, 9, 30)
        rec = t + 30 * _MINUTE
        age = rng.randint(18, 80) if rng.random() > 0.02 else rng.choice((16, 17, 81, 84))
        born = dt.date(self.day1.year - age - 1, rng.randint(1, 12), rng.randint(1, 28))
        if (self.at(day, 0).date() - born).days < age * 365.25:
            born = born.replace(year=born.year - 1)
        female = rng.random() < 0.55
        self.add(ev.DemographicsRecorded, t, rec, "dr.zhang", date_of_birth=born,
                 sex="F" if female else "M")
        diagnosis = rng.choices(("AIHA", "PRCA", "EVANS", "ITP"), (55, 20, 22, 3))[0]
        self.add(ev.DiagnosisRecorded, t, rec, "dr.zhang", condition=diagnosis,
                 code_system="ICD-10", code={"AIHA": "D59.1", "PRCA": "D60.9",
                                             "EVANS": "D69.3", "ITP": "D69.3"}[diagnosis])
        responsive = rng.random() < 0.04
        if responsive:  # a response, well tolerated: excluded (EXC-RESPONSE)
            response, tolerance = "partial", "tolerated"
        elif rng.random() < 0.4:  # a response, but not tolerated: refractory
            response, tolerance = "partial", "intolerant"
        else:
            response, tolerance = "none", rng.choice(("tolerated", "intolerant"))
        self.add(ev.PriorTherapyRecorded, t, rec, "dr.zhang", line=1, therapy="prednisone",
                 response=response, tolerance=tolerance)
        self.add(ev.PriorTherapyRecorded, t, rec, "dr.zhang", line=2,
                 therapy=rng.choice(("rituximab", "cyclosporine", "danazol")),
                 response="none", tolerance=rng.choice(("tolerated", "intolerant")))
        self.add(ev.OtherHaematologicalDiseaseAssessed, t, rec, "dr.zhang",
                 present=rng.random() < 0.02)
        if female:
            childbearing = rng.random() < 0.6
            self.add(ev.ChildbearingPotentialAssessed, t, rec, "dr.zhang",
                     childbearing_potential=childbearing)
            self.add(ev.LactationAssessed, t, rec, "dr.zhang", lactating=rng.random() < 0.01)
            if childbearing:
                drawn = t + 20 * _MINUTE
                self.add(ev.PregnancyTestResulted, drawn, drawn + 2 * _HOUR, "lab.central",
                         "lab:central",
                         result="positive" if rng.random() < 0.005 else "negative")
        ecog = self.at(day, 10)
        self.add(ev.EcogAssessed, ecog, ecog + 20 * _MINUTE, "dr.zhang",
                 score=rng.choice((0, 1, 1, 2)) if rng.random() > 0.03 else 3)
        if rng.random() < 0.5:
            self.add(ev.ObservationRecorded, ecog, ecog + 25 * _MINUTE, "dr.zhang",
                     code_system="protocol", code="UNABLE-TO-COMPLY", category="no")
        height = rng.randint(150, 190)
        weight = rng.randint(45, 95)
        self.add(ev.BodyMeasured, ecog, ecog + 15 * _MINUTE, "nurse.li", loinc=HEIGHT,
                 result=measure(HEIGHT, str(height), "cm"))
        self.add(ev.BodyMeasured, ecog, ecog + 15 * _MINUTE, "nurse.li", loinc=WEIGHT,
                 result=measure(WEIGHT, str(weight), "kg"))
        hb = rng.uniform(55, 85)
        plt = rng.uniform(15, 60) if diagnosis in ("EVANS", "ITP") else rng.uniform(120, 320)
        self.labs(self.at(day, 10, 15), hb, plt, retic=True)
        return {"diagnosis": diagnosis, "hb": hb, "plt": plt, "weight": weight}

    # --- results ----------------------------------------------------------------------------

    def labs(self, drawn: dt.datetime, hb: float, plt: float, *, retic: bool) -> None:
        rng = self.rng
        stamp = _aware(drawn).in_timezone(_UTC) if rng.random() < 0.3 else drawn
        recorded = self.later(drawn, 120, 360)
        specimen = f"{self.subject}-{len(self.events)}"
        lab = "PUMCH central laboratory"
        hb = max(hb, 30.0)
        unit = rng.choices(("g/L", "g/dL", "mmol/L"), (55, 35, 10))[0]
        value = {"g/L": f"{hb:.0f}", "g/dL": f"{hb / 10:.1f}",
                 "mmol/L": f"{hb / 16.11:.2f}"}[unit]
        typo = rng.random() < 0.004
        sent = (f"{hb / 10:.1f}", "g/L") if typo else (value, unit)
        result = self.add(ev.LabResulted, stamp, recorded, "lab.central", "lab:central",
                          loinc=HB, result=measure(HB, *sent), test="Haemoglobin",
                          specimen_id=specimen, laboratory=lab)
        if typo:  # implausible (9.8 g/L): the lab corrects the unit a few days later
            fixed = self.later(recorded, 24 * 60, 72 * 60)
            self.add(ev.EntryCorrected, fixed, fixed, "lab.central", "lab:central",
                     corrects=result.event_id,
                     changes={"result": {"value": f"{hb / 10:.1f}", "unit": "g/dL"}},
                     reason="unit transcribed wrongly")
        plt_unit = "10*9/L" if rng.random() < 0.7 else "10*3/uL"
        self.add(ev.LabResulted, stamp, recorded, "lab.central", "lab:central", loinc=PLT,
                 result=measure(PLT, f"{max(plt, 1.0):.0f}", plt_unit), test="Platelets",
                 specimen_id=specimen, laboratory=lab)
        if retic:
            self.add(ev.LabResulted, stamp, recorded, "lab.central", "lab:central",
                     loinc=RETIC, result=measure(RETIC, f"{rng.uniform(0.3, 4.0):.1f}", "%"),
                     test="Reticulocytes", specimen_id=specimen, laboratory=lab)

    # --- treatment --------------------------------------------------------------------------

    def treatment(self, facts: dict[str, Any], until: int) -> None:
        """Enrolment, then study days until ``until`` events exist (plus late records)."""
        rng = self.rng
        enrolled = self.at(-1, 15)
        self.add(ev.SubjectEnrolled, enrolled, enrolled + 5 * _MINUTE, "dr.zhang",
                 arm="tacrolimus 1 mg bid")
        self.add(ev.RegimenPrescribed, enrolled + 15 * _MINUTE, enrolled + 20 * _MINUTE,
                 "dr.zhang", drug=DRUG, dose=Quantity("1", "mg"), frequency="BID",
                 route="oral")
        diagnosis = facts["diagnosis"]
        hb0, plt0 = facts["hb"], facts["plt"]
        hb_goal = rng.uniform(85, 135)
        plt_goal = rng.uniform(40, 180) if diagnosis == "EVANS" else plt0
        month6 = 183 + rng.randint(-12, 12) if rng.random() > 0.05 else None
        month24 = 731 + rng.randint(-25, 25) if rng.random() > 0.05 else None
        mg = 2.0 if rng.random() < 0.01 else 1.0
        one_dose_day1 = rng.random() < 0.02
        last_evening: dt.datetime | None = None
        meds: list[tuple[int, str]] = []
        day = 1
        while len(self.events) < until:
            hb = hb0 + (hb_goal - hb0) * (1 - math.exp(-day / 60)) + rng.gauss(0, 4)
            plt = plt0 + (plt_goal - plt0) * (1 - math.exp(-day / 45)) + rng.gauss(0, 8)
            scheduled = day in (4, 8, 15, 22) or (day >= 29 and (day - 29) % 28 == 0)
            lab_day = day in (15, 29) or (day > 29 and (day - 29) % 28 == 0) or day in (
                month6, month24)
            if day == 1:
                self.labs(self.at(1, 7, 30), hb0, plt0, retic=True)
            morning = self.jitter(self.at(day, 8), 20)
            if scheduled and last_evening is not None:
                morning = self.trough(day, last_evening, mg, morning)
            if lab_day:
                visit = self.at(day, 8, 45)
                name = {month6: "Month 6", month24: "Month 24"}.get(day, f"Day {day}")
                self.add(ev.VisitOccurred, visit, visit + 15 * _MINUTE, "nurse.li",
                         visit=name)
                self.labs(self.at(day, 9) + rng.randint(0, 40) * _MINUTE, hb, plt,
                          retic=diagnosis == "PRCA" or rng.random() < 0.5)
                if rng.random() < 0.5:
                    unit = "kg" if rng.random() < 0.9 else "[lb_av]"
                    kg = facts["weight"] + rng.uniform(-2, 2)
                    value = f"{kg:.1f}" if unit == "kg" else f"{kg / 0.45359237:.1f}"
                    self.add(ev.BodyMeasured, visit, visit + 20 * _MINUTE, "nurse.li",
                             loinc=WEIGHT, result=measure(WEIGHT, value, unit))
            self.dose(morning, mg)
            if not (day == 1 and one_dose_day1):
                last_evening = self.dose(self.jitter(self.at(day, 20), 20), mg) or last_evening
            mg = self.maybe_change_dose(day, mg)
            self.incidents(day, diagnosis, meds)
            day += 1

    def dose(self, when: dt.datetime, mg: float) -> dt.datetime | None:
        """A dose (or a missed one); returns the time it was given, None if missed."""
        rng = self.rng
        if rng.random() < 0.012:
            self.add(ev.DoseMissed, when, self.later(when, 60, 480), "nurse.li", "emar",
                     drug=DRUG, reason=rng.choice(("forgot", "vomiting", "not available")))
            return None
        recorded = self.later(when, 5, 45)
        dose = Quantity(_mg(mg), "mg")
        given = self.add(ev.DoseAdministered, when, recorded, "nurse.li", "emar", drug=DRUG,
                         dose=dose, route="oral")
        roll = rng.random()
        if roll < 0.002:  # entered twice; the duplicate is retracted the next days
            twin = self.add(ev.DoseAdministered, when, recorded + _MINUTE, "nurse.li", "emar",
                            drug=DRUG, dose=dose, route="oral")
            fix = self.later(recorded, 20 * 60, 60 * 60)
            self.add(ev.EntryRetracted, fix, fix, "dr.zhang", retracts=twin.event_id,
                     reason="duplicate entry")
        elif roll < 0.004:  # the time was transcribed wrongly: given 30 minutes earlier
            fix = self.later(recorded, 20 * 60, 60 * 60)
            self.add(ev.EntryCorrected, fix, fix, "dr.zhang", corrects=given.event_id,
                     changes={"occurred_at": format_instant(_aware(when - 30 * _MINUTE))},
                     reason="time transcribed wrongly")
            return when - 30 * _MINUTE
        return when

    def trough(self, day: int, last_evening: dt.datetime, mg: float,
               morning: dt.datetime) -> dt.datetime:
        """A labelled trough before the morning dose; returns the morning dose time."""
        rng = self.rng
        if rng.random() < 0.92:
            hours = rng.uniform(11.1, 12.9)
        else:
            hours = rng.choice((rng.uniform(9.5, 10.8), rng.uniform(13.2, 14.5)))
        drawn = last_evening + dt.timedelta(hours=hours)
        sample = f"{self.subject}-T{day}"
        self.add(ev.SampleDrawn, drawn, self.later(drawn, 2, 10), "nurse.li", "edc",
                 sample_id=sample, purpose="trough")
        level = 7.0 * mg * math.exp(rng.gauss(0, 0.3))
        unit = rng.choices(("ng/mL", "ug/L", "pg/mL"), (85, 13, 2))[0]
        value = f"{level * 1000:.0f}" if unit == "pg/mL" else f"{level:.1f}"
        self.add(ev.DrugLevelResulted, drawn, self.later(drawn, 4 * 60, 28 * 60), "lab.central",
                 "lab:central", drug=DRUG, loinc=TAC_TROUGH,
                 result=measure(TAC_TROUGH, value, unit), sample_id=sample,
                 labelled_trough=True)
        self.last_level = level
        return max(morning, drawn + rng.randint(15, 40) * _MINUTE)

    def maybe_change_dose(self, day: int, mg: float) -> float:
        level = getattr(self, "last_level", None)
        if level is None:
            return mg
        self.last_level = None
        if 5 <= level <= 10 or self.rng.random() < 0.5:
            return mg
        new = max(0.5, min(3.0, mg + (0.5 if level < 5 else -0.5)))
        if new == mg:
            return mg
        when = self.at(day, 16)
        self.add(ev.DoseChanged, when, when + 10 * _MINUTE, "dr.zhang", drug=DRUG,
                 dose=Quantity(_mg(new), "mg"), frequency="BID",
                 reason="trough outside 5-10 ng/mL")
        return new

    def incidents(self, day: int, diagnosis: str, meds: list[tuple[int, str]]) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.004:
            when = self.at(day, rng.randint(9, 21))
            term, category = rng.choice((("Epistaxis", "bleeding"), ("Nausea", None),
                                         ("Tremor", None), ("Hypertension", None),
                                         ("Gingival bleeding", "bleeding")))
            if category == "bleeding" and diagnosis != "EVANS" and rng.random() < 0.7:
                term, category = "Headache", None
            self.add(ev.AdverseEventReported, when, self.later(when, 30, 1440), "dr.zhang",
                     term=term, grade=rng.choice((1, 1, 2, 3)), serious=False,
                     category=category)
        elif roll < 0.004 + (0.01 if day < 90 and diagnosis != "EVANS" else 0.0):
            when = self.at(day, 14)
            amount = (Quantity("300", "mL") if rng.random() < 0.7
                      else Quantity("1", "{unit}"))
            self.add(ev.TransfusionGiven, when, when + 2 * _HOUR, "nurse.li", product="RBC",
                     amount=amount)
        elif roll < 0.017:
            when = self.at(day, 11)
            medication = rng.choice(("omeprazole", "calcium carbonate", "folic acid"))
            meds.append((day + rng.randint(5, 30), medication))
            self.add(ev.ConcomitantMedicationStarted, when, when + 30 * _MINUTE, "dr.zhang",
                     medication=medication, indication="supportive care")
        for stop, medication in [m for m in meds if m[0] == day]:
            meds.remove((stop, medication))
            when = self.at(day, 11)
            self.add(ev.ConcomitantMedicationStopped, when, when + 30 * _MINUTE, "dr.zhang",
                     medication=medication)


def _aware(when: dt.datetime) -> pendulum.DateTime:
    """A naive wall-clock time of the site as an aware instant in its zone."""
    if when.tzinfo is not None:
        return when  # type: ignore[return-value]
    return pendulum.DateTime(when.year, when.month, when.day, when.hour, when.minute,
                             when.second, when.microsecond, tzinfo=_TZ)


def _mg(value: float) -> str:
    return f"{value:g}"


def _record_key(event: ev.Event) -> float:
    return event.recorded_at.timestamp()


def subject_history(index: int, events: int, *, seed: int = DEFAULT_SEED,
                    screen_failure: bool | None = None) -> list[ev.Event]:
    """The history of subject ``index``: exactly ``events`` events (fewer for a screen failure).

    In record-time order (the order the log grows in). ``screen_failure`` forces whether the
    subject fails screening (default: drawn, about 6 %).
    """
    history = _History(seed, index)
    facts = history.screening()
    fails = (history.rng.random() < SCREEN_FAILURE_RATE) if screen_failure is None else (
        screen_failure)
    if fails:
        when = history.at(-1, 10)
        history.add(ev.SubjectWithdrawn, when, when + 10 * _MINUTE, "dr.zhang",
                    reason="screen failure")
    else:
        # Late records (results a day later, corrections days later) need a margin.
        history.treatment(facts, until=events + 40)
    order = sorted(range(len(history.events)),
                   key=lambda i: (_record_key(history.events[i]), i))
    return [history.events[i] for i in order[:events]]


def study_histories(subjects: int, events_per_subject: int, *, seed: int = DEFAULT_SEED
                    ) -> Iterator[list[ev.Event]]:
    """Every subject's history, subject by subject."""
    for index in range(subjects):
        yield subject_history(index, events_per_subject, seed=seed)


def record_order(histories: Iterable[list[ev.Event]]) -> list[ev.Event]:
    """The whole study as the log would have grown: every event in record-time order."""
    keyed = ([(_record_key(e), n, i, e) for i, e in enumerate(h)]
             for n, h in enumerate(histories))
    return [item[3] for item in heapq.merge(*keyed)]


def evaluation_time(events: Iterable[ev.Event]) -> pendulum.DateTime:
    """A fixed evaluation time: one day after the last record (deterministic)."""
    last = max(events, key=_record_key).recorded_at
    return pendulum.instance(last).in_timezone(_UTC) + _DAY


def small_event_plan(total: int, *, per_subject: int = 1000, batch: int = 1000
                     ) -> list[tuple[int, int, int]]:
    """How to make ``total`` small events: (subject index, first, count) per append batch."""
    plan = []
    made = 0
    index = 0
    while made < total:
        count = min(per_subject, total - made)
        plan.extend((index, start, min(batch, count - start)) for start in range(0, count, batch))
        made += count
        index += 1
    return plan


def small_batch(index: int, first: int, count: int, *, seed: int = DEFAULT_SEED
                ) -> list[ev.Event]:
    """Small events (unscheduled visits, an hour apart) of subject ``MEM-<index>``."""
    rng = random.Random(f"{seed}:small:{index}:{first}")
    base = dt.datetime(2020, 1, 1, 9)
    subject = f"MEM-{index:06d}"
    events: list[ev.Event] = []
    for k in range(first, first + count):
        when = _aware(base + k * _HOUR)
        events.append(ev.VisitOccurred(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4), study=STUDY,
            subject=subject, occurred_at=when, recorded_at=when, recorded_by="nurse.li",
            visit="unscheduled"))
    return events


def small_event_batches(total: int, *, per_subject: int = 1000, batch: int = 1000,
                        seed: int = DEFAULT_SEED) -> Iterator[list[ev.Event]]:
    """``total`` small events for the memory test, one subject per batch."""
    for index, first, count in small_event_plan(total, per_subject=per_subject, batch=batch):
        yield small_batch(index, first, count, seed=seed)
