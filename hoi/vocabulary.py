"""What hand-object clips are about: actions, the tools that do them, the targets they apply
to, and the prompt that names all three. Synthetic clips draw from it, TACO's labels are
mapped onto it, the small codec's tokenizer learns its words, and `prepare.holdout` names one
of its combinations."""

from __future__ import annotations

# action -> (tools that can do it, targets it applies to)
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "stir": (("spoon", "spatula", "brush"), ("bowl", "cup", "pan")),
    "pour": (("kettle",), ("bowl", "cup", "pan", "plate")),
    "cut": (("knife", "spatula"), ("board", "plate", "box")),
    "brush": (("brush",), ("board", "plate", "box", "pan")),
    "scoop": (("spoon", "spatula"), ("bowl", "pan", "cup")),
    "hit": (("hammer",), ("board", "box", "plate")),
    "spread": (("knife", "spatula", "brush"), ("board", "plate")),
}
TOOLS = tuple(sorted({t for tools, _ in ACTIONS.values() for t in tools}))
TARGETS = tuple(sorted({t for _, targets in ACTIONS.values() for t in targets}))


def prompt_for(action: str, target: str, tool: str) -> str:
    return f"{action} the {target} with the {tool}"


HELDOUT_SPLIT = "heldout"
"""The split of `prepare.holdout`'s combination."""


def check_holdout(holdout: str) -> tuple[str, str]:
    """"<action>:<target>" -> (action, target), or a ValueError naming the valid choices."""
    action, _, target = holdout.partition(":")
    if action not in ACTIONS:
        raise ValueError(f"prepare.holdout {holdout!r}: the action must be one of "
                         f"{sorted(ACTIONS)}, as in \"scoop:cup\"")
    if target not in ACTIONS[action][1]:
        raise ValueError(f"prepare.holdout {holdout!r}: {action!r} applies to "
                         f"{list(ACTIONS[action][1])}, not {target!r}")
    return action, target
