"""Generated ids: ULID-style Crockford base32 of a millisecond time and randomness, so sorting
ids sorts by creation time, and every id is a valid path component."""
from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from jobs_core.ids import _encode, new_job_id, validate_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_encode(number: int, length: int) -> str:
    """The definition: `length` base-32 digits, most significant first, in Crockford's alphabet."""
    return "".join(CROCKFORD[(number >> (5 * place)) % 32] for place in reversed(range(length)))


@given(st.sampled_from([10, 16]).flatmap(lambda length: st.tuples(
    st.integers(min_value=0, max_value=32**length - 1), st.just(length))))
def test_encoding_is_crockford_base32(number_and_length):
    number, length = number_and_length
    assert _encode(number, length) == reference_encode(number, length)


def test_ids_sort_by_creation_time_and_are_valid_path_components():
    ids = [new_job_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # monotonic within a process
    assert all(validate_id(job_id, "jobId") == job_id and len(job_id) == 30 for job_id in ids)
    millis = int(time.time() * 1000)
    assert ids[-1][4:14] <= reference_encode(millis, 10)  # the first 10 digits are the time
    assert ids[-1][4:14] >= reference_encode(millis - 60_000, 10)
