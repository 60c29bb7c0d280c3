"""Declarative translation between jambonz verbs and AudioCodes activities, one YAML file per node.

Public API: `load_mappings`, `check_mappings`, `MappingSet`, `Engine`, `Translation`,
`CompareHints`. The file format is documented in `mappings/README.md`.
"""

from __future__ import annotations

from bridge.mapping.engine import UNMAPPED_NODE, CompareHints, Engine, Translation
from bridge.mapping.loader import SHIPPED_DIR, MappingSet, check_mappings, load_mappings
from bridge.mapping.schema import CONTEXT_KEYS, Direction, MessageKind

__all__ = [
    "CONTEXT_KEYS",
    "SHIPPED_DIR",
    "UNMAPPED_NODE",
    "CompareHints",
    "Direction",
    "Engine",
    "MappingSet",
    "MessageKind",
    "Translation",
    "check_mappings",
    "load_mappings",
]
