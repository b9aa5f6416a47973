"""The chart ships the same CRD as crds/, and a valid values schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "workerpool-operator"


def test_chart_crd_is_identical_to_crds_dir() -> None:
    assert (CHART / "crds" / "workerpool.yaml").read_bytes() == (ROOT / "crds" / "workerpool.yaml").read_bytes()


def test_default_values_satisfy_the_values_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
