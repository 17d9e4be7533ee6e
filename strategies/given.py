"""Given configurations, proposed in order: the second phase of weight-sharing NAS (the top-k architectures of
the supernet phase, each trained from scratch as an ordinary trial), or any list of configurations to train
(``--strategy given --strategy-option file=configs.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras_tuner as kt

from nas.errors import NasError, PluginError
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.plugins.strategy import Strategy


class GivenConfigurations(Strategy):
    """The configurations it is given (option ``configurations``, or ``file``: a JSON list), in order; without
    any, the space's default point. Proposes each once, then nothing."""

    name = "given"

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | list = "val_accuracy:max",
        seed: int | None = None,
        *,
        configurations: Sequence[Mapping[str, Any]] | None = None,
        file: str | None = None,
    ) -> None:
        super().__init__(space, objective, seed)
        if configurations is not None and file is not None:
            raise PluginError("given: give configurations or file, not both")
        if file is not None:
            try:
                configurations = json.loads(Path(file).read_text())
            except (OSError, ValueError) as e:
                raise PluginError(f"given option file={file!r} is not a readable JSON list ({e})") from None
        if configurations is None:
            configurations = [P.default_values(space)]
        if not isinstance(configurations, (list, tuple)) or not all(isinstance(c, Mapping) for c in configurations):
            raise PluginError(f"given option configurations={configurations!r:.200} is not valid; give a list of "
                              f"{{name: value}} objects")
        self.configurations: list[dict[str, Any]] = []
        for i, c in enumerate(configurations):
            values = {k: P.to_python(v) for k, v in dict(c).items()}
            try:
                P.validate(space, values)
            except NasError as e:
                raise PluginError(f"given configuration {i} is not a point of the space: {e}") from None
            self.configurations.append(values)
        self.position = 0

    def _ask(self) -> dict[str, Any] | None:
        seen = self.seen() if self.priors else set()  # a configuration already observed is not trained again
        while self.position < len(self.configurations):
            values = self.configurations[self.position]
            self.position += 1
            if P.canonical(values) not in seen:
                return dict(values)
        return None

    def _get_state(self) -> dict[str, Any]:
        return {"configurations": self.configurations, "position": self.position}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.configurations = [dict(c) for c in state["configurations"]]
        self.position = int(state["position"])
