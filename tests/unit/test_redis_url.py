"""Redis URLs as the contract admits them, parsed once; errors never repeat the URL or its password."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.contracts.redis_url import RedisUrl, RedisUrlError, parse_redis_url


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("redis://redis:6379/0", RedisUrl("redis", tls=False, db=0, host="redis")),
        ("rediss://:pw@redis.example:6380/3", RedisUrl("rediss", tls=True, db=3, host="redis.example", port=6380)),
        ("unix:///run/redis.sock", RedisUrl("unix", tls=False, path="/run/redis.sock")),
        (
            "redis+sentinel://:pw@s1:26379,s2:26379,s3:26379/mymaster/2",
            RedisUrl("redis+sentinel", False, (("s1", 26379), ("s2", 26379), ("s3", 26379)), "mymaster", 2),
        ),
        ("rediss+sentinel://u:p@10.0.0.1:26379/m", RedisUrl("rediss+sentinel", True, (("10.0.0.1", 26379),), "m")),
    ],
)
def test_the_contracts_schemes(url: str, parsed: RedisUrl) -> None:
    assert parse_redis_url(url) == parsed


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://:hunter2@redis:6379/0", "unknown scheme 'http'"),
        ("redis-sentinel://:hunter2@s:26379/m", "unknown scheme"),
        ("hunter2", "not a URL"),
        ("redis://:hunter2@redis:port/0", "port is not a number"),
        ("redis://:hunter2@/0", "no host"),
        ("redis://:hunter2@redis:6379/zero", "database is not a number"),
        ("redis+sentinel://:hunter2@s1:26379", "no master name"),
        ("redis+sentinel://:hunter2@s1/m", "host:port"),
        ("redis+sentinel://:hunter2@s1:26379/m/1/x", "too many path segments"),
    ],
)
def test_a_url_that_cannot_be_used_says_why_and_not_the_password(url: str, says: str) -> None:
    with pytest.raises(RedisUrlError, match=says) as caught:
        parse_redis_url(url)
    assert "hunter2" not in str(caught.value)


@given(
    st.sampled_from(["redis", "rediss", "redis+sentinel", "rediss+sentinel", "http", "redis-sentinel", ""]),
    st.text(alphabet="QWXZ#%&", min_size=6, max_size=16),  # no letter of any message
    st.text(alphabet=st.characters(blacklist_characters="QWXZ#%&"), max_size=40),
)
def test_no_error_ever_repeats_the_password(scheme: str, password: str, rest: str) -> None:
    message = ""
    try:
        parse_redis_url(f"{scheme}://:{password}@{rest}")
    except RedisUrlError as exc:
        message = str(exc)
    assert password not in message
