"""The catalog's filter language: what each construct selects, and mistakes named by their column."""
import numpy as np
import pandas as pd
import pytest

from megatron_video.config import ConfigError
from megatron_video.data.catalog import apply_filter
from megatron_video.data.filters import FilterError, evaluate_filter


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    # A joined catalog in miniature: clip `b` has no score (a feature set that skipped it).
    return pd.DataFrame({"key": ["a", "b", "c", "d"], "duration_s": [1.0, 3.0, 5.0, 7.5],
                         "num_frames": [24, 72, 120, 180], "caption": ["a dog", "A cat", None, "dog runs"],
                         "aesthetic_score": [0.1, np.nan, 0.9, 0.5], "has_text": [True, False, None, True],
                         "crop": [[0, 0, 1, 1]] * 4})


@pytest.mark.parametrize("expression, keys", [
    ("", "abcd"),
    ("duration_s >= 3", "bcd"),
    ("duration_s >= 3 and aesthetic_score > 0.4", "cd"),
    ("duration_s < 2 or aesthetic_score >= 0.9", "ac"),
    ("not (duration_s > 2)", "a"),
    ("caption contains 'dog'", "ad"),
    ('lower(caption) contains "a c"', "b"),
    ("len(caption) > 5", "d"),
    ("aesthetic_score != 0.1", "cd"),  # a missing score matches no comparison, != included
    ("aesthetic_score is null", "b"),
    ("aesthetic_score is not null and caption is not null", "ad"),
    ("num_frames in [24, 120]", "ac"),
    ("key not in ['a', 'b']", "cd"),
    ("has_text", "ad"),
    ("has_text == false", "b"),
    ("num_frames / duration_s == 24 and -duration_s < -4", "cd"),
    ("abs(duration_s - 5) <= 1 or `key` == 'a'", "ac"),
    ("duration_s > 1e0 AND duration_s < 7", "bc"),
])
def test_expressions_select_the_rows_they_say(frame, expression, keys):
    assert "".join(frame["key"][evaluate_filter(frame, expression)]) == keys


@pytest.mark.parametrize("expression, named", [
    ("aesthetc_score > 0.5", "unknown column 'aesthetc_score' (did you mean 'aesthetic_score'?)"),
    ("caption > 3", "column 'caption' holds text"),
    ("3 < caption", "column 'caption' holds text"),
    ("duration_s contains 'x'", "column 'duration_s' holds numbers"),
    ("duration_s", "column 'duration_s' holds numbers; a filter needs a condition"),
    ("aesthetic_score and has_text", "column 'aesthetic_score' holds numbers; 'and' needs a condition"),
    ("has_text > 0", "column 'has_text' holds true/false values"),
    ("crop == 1", "column 'crop' holds lists"),
    ("caption + 1 > 2", "column 'caption' holds text; '+' needs numbers"),
    ("num_frames in ['a']", "column 'num_frames' holds numbers"),
])
def test_mistakes_name_the_column(frame, expression, named):
    with pytest.raises(FilterError) as err:
        evaluate_filter(frame, expression)
    assert named in str(err.value)


@pytest.mark.parametrize("expression, message", [
    ("duration_s = 3", "write == to compare"),
    ("(duration_s > 3", "expected ')'"),
    ("duration_s > ", "expected a column, number or text"),
    ("duration_s > 3 3", "expected end"),
    ("__import__('os').system('true')", "unexpected '.'"),
    ("num_frames in [duration_s]", "expected a number, text, true or false in the list"),
])
def test_syntax_errors_say_where(frame, expression, message):
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate_filter(frame, expression)


def test_the_catalog_reports_a_bad_filter_under_the_key_that_holds_it(frame):
    with pytest.raises(ConfigError) as err:
        apply_filter(frame, "aesthetc_score > 0.5", key="data.version")
    assert err.value.key == "data.version" and "aesthetc_score" in str(err.value)
