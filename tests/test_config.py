"""Configuration: API key resolution and secrets that never print."""

from __future__ import annotations

import pytest

import qwen_edit_async as qe
from qwen_edit_async._config import Secret, resolve_api_key


def test_key_order_argument_then_generic_then_provider_variable() -> None:
    """The argument wins, then QWEN_EDIT_API_KEY, then the provider's own variable."""
    env = {"QWEN_EDIT_API_KEY": "generic", "EVOLINK_API_KEY": "own"}
    assert resolve_api_key("arg", "EVOLINK_API_KEY", env).get() == "arg"
    assert resolve_api_key(None, "EVOLINK_API_KEY", env).get() == "generic"
    assert resolve_api_key(None, "EVOLINK_API_KEY", {"EVOLINK_API_KEY": "own"}).get() == "own"


def test_missing_key_names_the_variables() -> None:
    """With no key anywhere, ConfigurationError says which variables were looked at."""
    with pytest.raises(qe.ConfigurationError, match="QWEN_EDIT_API_KEY or DASHSCOPE_API_KEY"):
        resolve_api_key(None, "DASHSCOPE_API_KEY", {})


def test_secret_and_client_repr_hide_the_key() -> None:
    """Neither the Secret nor the client's repr shows the key."""
    key = "sk-very-secret-value-42"
    assert key not in repr(Secret(key)) and key not in str(Secret(key))
    client = qe.QwenEditClient("dashscope", api_key=key)
    assert key not in repr(client)


@pytest.mark.parametrize(
    ("field", "value"),
    [("job_timeout", 0), ("poll_rate", -1), ("poll_jitter", 1.5), ("max_attempts", 0)],
)
def test_bad_config_values_are_validation_errors(field: str, value: float) -> None:
    """A config value out of its range is refused with the field named."""
    with pytest.raises(qe.ValidationError, match=field):
        qe.ClientConfig(**{field: value})  # type: ignore[arg-type]


def test_client_rejects_unknown_options_and_bad_max_in_flight() -> None:
    """Typos in options are TypeErrors; max_in_flight below 1 is a ValidationError."""
    with pytest.raises(TypeError, match="job_timout"):
        qe.QwenEditClient("dashscope", api_key="k", job_timout=3)
    with pytest.raises(qe.ValidationError, match="max_in_flight"):
        qe.QwenEditClient("dashscope", api_key="k", max_in_flight=0)


def test_base_url_without_a_scheme_is_a_configuration_error() -> None:
    """A base URL that is not http(s) fails at construction, before anything is sent."""
    with pytest.raises(qe.ConfigurationError, match="base_url"):
        qe.QwenEditClient("dashscope", api_key="k", base_url="127.0.0.1:8000")


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("max_attempts", float("nan"), "whole number"),
        ("max_attempts", 2.5, "whole number"),
        ("max_attempts", True, "not a number"),
        ("poll_concurrency", 8.0, "whole number"),
        ("download_max_bytes", float("inf"), "whole number"),
        ("job_timeout", float("nan"), "finite"),
        ("job_timeout", float("inf"), "finite"),
        ("poll_rate", float("-inf"), "finite"),
        ("backoff_base", "0.5", "not a number"),
        ("retry_uncertain", 1, "True or False"),
        ("read_timeout", None, "None is not allowed"),
    ],
)
def test_non_finite_fractional_and_mistyped_values_are_refused(
    field: str, value: object, rule: str
) -> None:
    """NaN, infinities, fractional counts and values of the wrong kind are ValidationErrors
    naming the field and the rule (NaN once made max_attempts retry a create without end)."""
    with pytest.raises(qe.ValidationError, match=rf"^{field}: .*{rule}") as info:
        qe.ClientConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field


def test_client_keywords_are_checked_like_the_config() -> None:
    """Options given to the client go through the same checks as ClientConfig."""
    with pytest.raises(qe.ValidationError, match="max_attempts"):
        qe.QwenEditClient("dashscope", api_key="k", max_attempts=float("nan"))


def test_valid_edge_values_are_accepted() -> None:
    """None where a field allows it, zero jitter and whole floats for seconds are fine."""
    config = qe.ClientConfig(job_timeout=None, submit_rate=None, poll_jitter=0, read_timeout=5)
    assert config.job_timeout is None and config.poll_jitter == 0 and config.read_timeout == 5
