"""The DuckDB store (all SQL lives here), split by domain: one repository per domain over one shared
`Database`; see store.py."""

from .activations import ActivationRepo
from .browse import FIXED_SORTS, FeatureIndex
from .builder import DictionaryBuilder
from .captures import CaptureRepo
from .db import Database, Transaction
from .labels import LabelRepo
from .ledger import LedgerRepo
from .matches import MatchRepo
from .samples import SampleRepo
from .schema import LATEST_VERSION
from .store import Store, StoreTx, open_store
from .vectors import VectorRepo

__all__ = ["FIXED_SORTS", "LATEST_VERSION", "ActivationRepo", "CaptureRepo", "Database", "DictionaryBuilder",
           "FeatureIndex", "LabelRepo", "LedgerRepo", "MatchRepo", "SampleRepo", "Store", "StoreTx", "Transaction",
           "VectorRepo", "open_store"]
