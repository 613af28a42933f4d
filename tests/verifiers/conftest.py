import pytest

from verifiers.bounded import symbolic_compare


def wrap(answer: str, think: str = "Read the figure, then compute.") -> str:
    """A well-formatted model response around ``answer``."""
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


@pytest.fixture
def respond():
    return wrap


@pytest.fixture(scope="session")
def warm_pool():
    """Start the shared symbolic worker, so time bounds measure verification, not process start-up."""
    reply = symbolic_compare("1", "1", timeout_s=30)
    assert reply.get("equal") is True, reply
    return True
