"""Shared by the describer-cache tests: count the vocabulary searches that ran."""

from __future__ import annotations

from types import ModuleType

import pytest


def count_description_searches(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[int]:
    """Wrap `module.search_descriptions` (where the code under test looks it up); the
    list gets the number of regions of each call."""
    calls: list[int] = []
    real = module.search_descriptions

    def counting(describer, emb, kinds, phrases):  # noqa: ANN001, ANN202
        calls.append(int(emb.shape[0]))
        return real(describer, emb, kinds, phrases)

    monkeypatch.setattr(module, "search_descriptions", counting)
    return calls
