"""protocolkit: clinical-trial protocols as executable, auditable rules.

An append-only event log of what happens to each trial subject, a declarative protocol
language, and an engine that replays the log against the protocol.

>>> import protocolkit
>>> issubclass(protocolkit.ConcurrencyError, protocolkit.ProtocolKitError)
True
"""

from importlib import metadata as _metadata

from protocolkit.corrections import apply_correction, effective_events
from protocolkit.errors import (
    ConcurrencyError,
    EventError,
    EventValidationError,
    ProtocolKitError,
    StoreError,
    StoreIntegrityError,
    UnitError,
)
from protocolkit.events import (
    EVENT_TYPES,
    AdverseEventReported,
    BodyMeasured,
    ChildbearingPotentialAssessed,
    ConcomitantMedicationStarted,
    ConcomitantMedicationStopped,
    ConsentSigned,
    ConsentWithdrawn,
    DemographicsRecorded,
    DiagnosisRecorded,
    DoseAdministered,
    DoseChanged,
    DoseMissed,
    DrugLevelResulted,
    EcogAssessed,
    EntryCorrected,
    EntryRetracted,
    Event,
    LabResulted,
    LactationAssessed,
    ObservationRecorded,
    OtherHaematologicalDiseaseAssessed,
    PregnancyTestResulted,
    PriorResponse,
    PriorTherapyRecorded,
    RegimenPrescribed,
    SampleDrawn,
    Sex,
    SubjectEnrolled,
    SubjectRegistered,
    SubjectWithdrawn,
    TestResult,
    TimePrecision,
    Tolerance,
    TransfusionGiven,
    TreatmentDiscontinued,
    VisitOccurred,
)
from protocolkit.ingest import ImportResult, export_jsonl, import_jsonl
from protocolkit.serde import event_from_json, event_to_json, read_jsonl, write_jsonl
from protocolkit.store import EventStore, RecordedEvent, open_store, subject_stream_id
from protocolkit.timeutil import format_instant, parse_instant
from protocolkit.units import Measurement, MeasurementStatus, Quantity, measure, parse_unit

try:
    __version__ = _metadata.version("protocolkit")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "EVENT_TYPES",
    "AdverseEventReported",
    "BodyMeasured",
    "ChildbearingPotentialAssessed",
    "ConcomitantMedicationStarted",
    "ConcomitantMedicationStopped",
    "ConcurrencyError",
    "ConsentSigned",
    "ConsentWithdrawn",
    "DemographicsRecorded",
    "DiagnosisRecorded",
    "DoseAdministered",
    "DoseChanged",
    "DoseMissed",
    "DrugLevelResulted",
    "EcogAssessed",
    "EntryCorrected",
    "EntryRetracted",
    "Event",
    "EventError",
    "EventStore",
    "EventValidationError",
    "ImportResult",
    "LabResulted",
    "LactationAssessed",
    "Measurement",
    "MeasurementStatus",
    "ObservationRecorded",
    "OtherHaematologicalDiseaseAssessed",
    "PregnancyTestResulted",
    "PriorResponse",
    "PriorTherapyRecorded",
    "ProtocolKitError",
    "Quantity",
    "RecordedEvent",
    "RegimenPrescribed",
    "SampleDrawn",
    "Sex",
    "StoreError",
    "StoreIntegrityError",
    "SubjectEnrolled",
    "SubjectRegistered",
    "SubjectWithdrawn",
    "TestResult",
    "TimePrecision",
    "Tolerance",
    "TransfusionGiven",
    "TreatmentDiscontinued",
    "UnitError",
    "VisitOccurred",
    "__version__",
    "apply_correction",
    "effective_events",
    "event_from_json",
    "event_to_json",
    "export_jsonl",
    "format_instant",
    "import_jsonl",
    "measure",
    "open_store",
    "parse_instant",
    "parse_unit",
    "read_jsonl",
    "subject_stream_id",
    "write_jsonl",
]
