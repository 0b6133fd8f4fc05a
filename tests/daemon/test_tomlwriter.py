import math
import tomllib

from hypothesis import given
from hypothesis import strategies as st

from overlay.daemon.tomlwriter import dumps

_scalars = (
    st.text(max_size=30)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.floats(allow_nan=False)
)
_values = _scalars | st.lists(st.text(max_size=10), max_size=4) | st.lists(st.integers(), max_size=4)
_keys = st.text(min_size=1, max_size=12)


@given(st.dictionaries(_keys, _values, max_size=6),
       st.dictionaries(_keys, st.dictionaries(_keys, _values, max_size=4), max_size=3))
def test_round_trips_through_tomllib(plain: dict[str, object], tables: dict[str, object]) -> None:
    document = dict(plain)
    for name, table in tables.items():
        document.setdefault(name, table)
    assert tomllib.loads(dumps(document)) == document  # type: ignore[arg-type]


def test_escapes_control_characters_and_quotes() -> None:
    text = 'a"b\\c\n\x00\x7f\t'
    assert tomllib.loads(dumps({"k": text}))["k"] == text


def test_special_floats() -> None:
    loaded = tomllib.loads(dumps({"a": math.inf, "b": -math.inf, "c": math.nan}))
    assert loaded["a"] == math.inf and loaded["b"] == -math.inf and math.isnan(loaded["c"])
