import datetime as dt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.errors import ComplianceDenied
from testbed.sites.keys import load_or_create_key
from testbed.sites.profile import Transformation
from testbed.sites.transform import (
    MessageFilter,
    Pseudonymizer,
    coarsen_number,
    not_applicable,
    transform_column,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
DROP = Transformation(kind="drop")
PSEUDO = Transformation(kind="pseudonymize")


def test_a_pseudonym_is_stable_for_one_key():
    a = Pseudonymizer(KEY_A, "site")
    assert a.pseudonym("operator_id", "OP-1142") == Pseudonymizer(KEY_A, "site").pseudonym("operator_id", "OP-1142")


def test_pseudonyms_differ_across_keys_and_values():
    a, b = Pseudonymizer(KEY_A, "site"), Pseudonymizer(KEY_B, "site")
    assert a.pseudonym("operator_id", "OP-1142") != b.pseudonym("operator_id", "OP-1142")
    assert a.pseudonym("operator_id", "OP-1142") != a.pseudonym("operator_id", "OP-1143")


@given(st.text(min_size=1, max_size=40))
def test_a_pseudonym_never_contains_the_raw_value(value):
    pseudonym = Pseudonymizer(KEY_A, "site").pseudonym("operator_id", value)
    assert pseudonym.startswith("psn-") and len(pseudonym) == 24
    assert value not in pseudonym[4:] or len(value) < 3  # a short value can occur in hex by chance


def test_the_key_never_shows_in_the_pseudonymizers_repr():
    text = repr(Pseudonymizer(KEY_A, "kr-site"))
    assert KEY_A.hex() not in text and "kr-site" in text


def test_a_site_key_is_created_once_and_kept(keys_dir):
    first = load_or_create_key("kr-site")
    assert len(first) == 32 and load_or_create_key("kr-site") == first
    assert (keys_dir / "kr-site.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_key("us-site") != first


def test_pseudonymizing_a_column_keeps_empty_cells_empty():
    result = transform_column("operator_id", ["OP-1", "", "OP-1", "OP-2"], PSEUDO, Pseudonymizer(KEY_A, "s"))
    assert result.values[1] == "" and result.values[0] == result.values[2] != result.values[3]
    assert not any(v.startswith("OP-") for v in result.values)


def test_dropping_a_column_removes_it():
    assert transform_column("lot_no", ["L1", "L2"], DROP).values is None


def test_coarsening_rounds_numbers_and_keeps_csv_text_clean():
    step = Transformation(kind="coarsen", step=0.5)
    assert transform_column("weight_g", ["4.12", "3.38", "0.99"], step).values == ["4.0", "3.5", "1.0"]
    whole = Transformation(kind="coarsen", step=1)
    assert transform_column("length_mm", ["33.4", "20.6"], whole).values == ["33", "21"]
    assert transform_column("weight_g", [4.12, 3.38], Transformation(kind="coarsen", step=1.0)).values == [4.0, 3.0]
    assert coarsen_number(-2.5, 1.0) == -3.0 and coarsen_number(0.30000000000000004, 0.1) == 0.3


def test_coarsening_times_floors_them_to_the_step():
    stamps = ["2024-05-13T13:12:05.160+09:00", "2024-05-13T13:59:59+09:00"]
    hourly = transform_column("timestamp", stamps, Transformation(kind="coarsen", step=3600)).values
    assert hourly == ["2024-05-13T13:00:00+09:00", "2024-05-13T13:00:00+09:00"]
    native = [dt.datetime(2024, 5, 13, 4, 12, 5, tzinfo=dt.UTC)]
    assert transform_column("t", native, Transformation(kind="coarsen", step=60)).values[0].second == 0


def test_aggregating_a_column_sends_its_summary_only():
    result = transform_column("weight_g", ["1.0", "2.0", "6.0"], Transformation(kind="aggregate"))
    assert result.values is None
    assert result.summary == {"count": 3, "mean": 3.0, "min": 1.0, "max": 6.0}


def test_a_transformation_that_cannot_apply_is_refused():
    with pytest.raises(ComplianceDenied, match="field weight_g: pseudonymize cannot apply to a number field"):
        transform_column("weight_g", ["1.0"], PSEUDO, Pseudonymizer(KEY_A, "s"))
    assert "live message cannot be aggregated" in not_applicable(Transformation(kind="aggregate"), "tensor",
                                                                 table=False)
    assert not_applicable(DROP, "artifact", table=False) is None


def test_a_message_filter_drops_and_coarsens_without_touching_the_input():
    obs = {"observation.state": np.array([0.123, -0.456], np.float32), "observation.images.top": np.zeros((2, 2, 3))}
    flt = MessageFilter("observations", {"observation.state": Transformation(kind="coarsen", step=0.1),
                                         "observation.images.top": DROP})
    out = flt.apply(obs)
    assert list(out) == ["observation.state"] and not flt.identity
    np.testing.assert_allclose(out["observation.state"], [0.1, -0.5], atol=1e-6)
    assert out["observation.state"].dtype == np.float32 and obs["observation.state"][0] == np.float32(0.123)


def test_a_message_filter_refuses_a_field_never_planned():
    flt = MessageFilter("observations", {"observation.state": None})
    assert flt.identity and flt.apply({"observation.state": np.zeros(2)}).keys() == {"observation.state"}
    with pytest.raises(ComplianceDenied, match=r"observation\.images\.top was not in the flow plan"):
        flt.apply({"observation.state": np.zeros(2), "observation.images.top": np.zeros(3)})


def test_a_message_filter_pseudonymizes_text_fields():
    flt = MessageFilter("workload", {"order_id": PSEUDO}, Pseudonymizer(KEY_A, "s"))
    out = flt.apply({"order_id": np.array(["WO-1", "WO-2"])})
    assert all(v.startswith("psn-") for v in out["order_id"].tolist())
