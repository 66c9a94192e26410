"""ReAct trajectories: a parser robust to what real models write, and the loop that runs the tools.

A trajectory interleaves ``Thought n:``, ``Action n: Search[...]|Lookup[...]|Finish[...]`` and
``Observation n:`` lines (Yao et al. 2023). Models drop step numbers, change case, add spaces, write text
after ``Finish[...]`` or after the last action, and stop without finishing; the parser accepts all of that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LABELS = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")
_ALIASES = {
    "SUPPORTS": "SUPPORTS", "SUPPORT": "SUPPORTS", "SUPPORTED": "SUPPORTS",
    "REFUTES": "REFUTES", "REFUTE": "REFUTES", "REFUTED": "REFUTES",
    "NOT ENOUGH INFO": "NOT ENOUGH INFO", "NOT ENOUGH INFORMATION": "NOT ENOUGH INFO", "NEI": "NOT ENOUGH INFO",
    "NOTENOUGHINFO": "NOT ENOUGH INFO",
}
ACTION = re.compile(r"\b(search|lookup|finish)\s*\[([^\]\n]*)\]?", re.IGNORECASE)
MARKER = re.compile(r"^\s*(thought|action|observation)\s*(\d+)?\s*:\s?", re.IGNORECASE | re.MULTILINE)


def normalize_label(text) -> str | None:
    """SUPPORTS / REFUTES / NOT ENOUGH INFO from the usual spellings (case, underscores, NEI), else None."""
    if text is None:
        return None
    t = re.sub(r"[\s_\-]+", " ", str(text)).strip().strip(".!\"'` ").upper()
    return _ALIASES.get(t) or _ALIASES.get(t.replace(" ", ""))


@dataclass(frozen=True)
class Action:
    kind: str  # search, lookup, finish, or invalid
    arg: str
    label: str | None = None  # for finish

    def render(self) -> str:
        return f"{self.kind.capitalize()}[{self.arg}]"


def parse_action(text: str) -> Action | None:
    """The first action in ``text``; None when there is none; kind "invalid" when it is malformed."""
    m = ACTION.search(text)
    if m is None:
        am = re.search(r"\baction\s*\d*\s*:\s*(.+)", text, re.IGNORECASE)
        return Action("invalid", am.group(1).strip()) if am and am.group(1).strip() else None
    kind, arg = m.group(1).lower(), m.group(2).strip()
    if not text[m.end(2):m.end()].endswith("]"):
        return Action("invalid", arg)  # an unclosed bracket: the model ran out of tokens mid-action
    if kind == "finish":
        label = normalize_label(arg)
        return Action("finish", arg, label) if label else Action("invalid", arg)
    return Action(kind, arg) if arg else Action("invalid", arg)


@dataclass
class Step:
    thought: str | None = None
    action: Action | None = None
    observation: str | None = None


@dataclass
class Trajectory:
    steps: list[Step] = field(default_factory=list)

    @property
    def finish(self) -> Action | None:
        return next((s.action for s in self.steps if s.action and s.action.kind == "finish"), None)

    @property
    def label(self) -> str | None:
        return self.finish.label if self.finish else None

    @property
    def finished(self) -> bool:
        return self.finish is not None

    @property
    def actions(self) -> list[Action]:
        return [s.action for s in self.steps if s.action]


def parse_trajectory(text: str) -> Trajectory:
    """Split a whole trajectory into steps. Numbers are optional; a new step starts at each Thought (or at an
    Action that follows an Observation); everything after the first Finish is ignored."""
    traj = Trajectory()
    marks = list(MARKER.finditer(text))
    current: Step | None = None
    for i, m in enumerate(marks):
        kind = m.group(1).lower()
        body = text[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip()
        if current is None or kind == "thought" or (kind == "action" and current.action is not None) or (
                kind == "observation" and current.observation is not None):
            current = Step()
            traj.steps.append(current)
        if kind == "thought":
            current.thought = body
        elif kind == "action":
            current.action = parse_action(body) or Action("invalid", body)
            if current.action.kind == "finish":
                break
        else:
            current.observation = body
    return traj


def cut_after_action(text: str) -> str:
    """A model's step output up to the end of its first action; text after it is the model running on
    (an observation it made up, or its next thought)."""
    m = ACTION.search(text)
    if m and m.group(0).endswith("]"):
        return text[:m.end()]
    return re.split(r"Observation|\nThought", text)[0].rstrip()


INVALID = ("Invalid action. Valid actions are Search[entity], Lookup[keyword] and "
           "Finish[SUPPORTS|REFUTES|NOT ENOUGH INFO].")


@dataclass
class Episode:
    """One claim's run through the loop; ``text`` is the trajectory so far, as the model sees it."""

    browser: object
    text: str = ""
    steps: int = 0  # every step is one attempted action
    invalid: int = 0
    label: str | None = None
    done: bool = False
    stop_reason: str = ""

    def context(self, prompt: str) -> str:
        return f"{prompt}{self.text}Thought {self.steps + 1}:"

    def advance(self, generated: str) -> None:
        """Take the model's Thought + Action for the next step, run the action, append the observation."""
        self.steps += 1
        n = self.steps
        body = cut_after_action(generated)
        action = parse_action(body)
        self.text += f"Thought {n}:{body}" if body.startswith((" ", "\n")) else f"Thought {n}: {body}"
        if action is None or action.kind == "invalid":
            self.invalid += 1
            observation = INVALID
        else:
            if action.kind == "finish":
                self.label, self.done, self.stop_reason = action.label, True, "finish"
                return
            observation = (self.browser.search(action.arg) if action.kind == "search"
                           else self.browser.lookup(action.arg))
        self.text += f"\nObservation {n}: {observation}\n"


def run_loop(prompts: list[str], episodes: list[Episode], step_fn, max_steps: int, fits=None) -> None:
    """Advance every unfinished episode one step at a time, batching the model calls across episodes.

    ``step_fn(contexts, step_number) -> outputs`` is the model (or a scripted fake in tests); ``fits(context)`` says
    whether a context still leaves room to generate, else the episode stops as "context full".
    """
    for n in range(1, max_steps + 1):
        active = [i for i, e in enumerate(episodes) if not e.done]
        if fits is not None:
            for i in list(active):
                if not fits(episodes[i].context(prompts[i])):
                    episodes[i].done, episodes[i].stop_reason = True, "context full"
                    active.remove(i)
        if not active:
            return
        outputs = step_fn([episodes[i].context(prompts[i]) for i in active], n)
        for i, out in zip(active, outputs, strict=True):
            episodes[i].advance(out)
    for e in episodes:
        if not e.done:
            e.done, e.stop_reason = True, "max steps"
