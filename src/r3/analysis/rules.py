"""The `rules` behaviour classifier: documented patterns over the sentences of a text.

A text is split into lines, and lines into sentences. Each behaviour counts the sentences that
match one of its cue patterns and none of its exclusions (one per sentence at most); adjacent
sentences restating the same step count once. The patterns (validated against the hand-labelled
set in tests/data/behaviours, see the README there):

verification       a result compared with the target or the rules: "Check:/Verify:/Double-check",
                   "34 is not 21", "≠", "12 above the target", "matches the target", "too small",
                   "✓", "instead of 20", "used 7 twice", "left out", "each used once". Not when it
                   is only an intention ("I should check", "next time I'll verify").
backtracking       a path explicitly abandoned: "abandon", "backtrack", "scratch/scrap that",
                   "dead end", "that doesn't work", "this path fails", "start over", "drop that".
                   Not when negated ("no need to backtrack").
subgoal_setting    an intermediate goal: "Subgoal:", "First I want to make 11 from 3 and 9",
                   "I need 12 from 7 and 1", "let me first get 10", "Step one: get a 6", "the 8
                   and 3 have to produce 24". Not the puzzle's own goal ("make 6 from 9, 8 and 5,
                   each used once") or its rules ("I need to use every number").
backward_chaining  reasoning from the target back: "reason from the target", "working/going
                   backwards", "back from 24", "24 can be written as", "21 = 11 + 7, which means
                   I need 11", "24 - 9 = 15, so the 8 and 3 have to make 15".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from r3.analysis.behaviours import BEHAVIOURS, Classifier

_NUM = r"-?\d{1,12}(?:\.\d{1,6})?"  # bounded: no quadratic scans of long digit runs
_OP = r"[-+*/×x÷]"
_MODAL = re.compile(r"\b(should|next time|i'll|i will|will|need to|must|remember to|forgot to|didn't|did not|"
                    r"make sure|always|never)\b[^.;]*\b(check|verify|double-check)", re.I)


def _rx(*parts: str) -> re.Pattern:
    return re.compile("|".join(parts), re.I)


CUES = {
    "verification": _rx(
        rf"\b(is|was|are|gives?|equals?|makes?)\s+not\s+(equal to\s+)?(the target\s*)?{_NUM}", r"≠", r"✓|✔",
        r"\b(above|below|short of|off from|away from|over) the target\b", r"\bbut the target is\b",
        r"\b(matches|equals|hits|reaches|meets) the target\b", rf"\bit equals {_NUM}\b",
        rf"\byes,? that(?:'s| is) {_NUM}",
        r"\btoo (small|big|large|high|low|many|few|much|little)\b", rf"\b{_NUM} (short|over|too many|too few)\b",
        r"\b(two|three|four|five|one) (short|over|too many|too few)\b", rf"\binstead of (the target )?{_NUM}",
        r"\bwhich is (what we need|the target|right|correct)\b", r"\bmiss(es|ed)? the target\b",
        rf"\b(the )?{_NUM} twice\b", r"\b(overshoots?|undershoots?|way off|was fine)\b",
        rf"\b(gives?|got|get|is|makes?) {_NUM},? but (i|we) need(ed)? {_NUM}",
        r"\bleft out\b", r"\bnever used\b", r"\bnot (yet )?used\b",
        r"\b(each|every number|all (three|four|the) numbers?) (is |are )?(used|appears?) (exactly )?once\b",
        r"\b(are|is|were|was) (each )?(used|appears?) (exactly )?once\b",
        r"\buses? every number\b", r"\bnothing left over\b", r"\bnot the target\b", r"\bis the target\b(?! \d)",
    ),
    "backtracking": _rx(
        r"\babandon", r"\bbacktrack", r"\bscra(tch|p) (that|this|it)\b", r"\bdead[- ]end\b",
        r"\b(that|this|it) (doesn't|does not|won't|will not|didn't|did not) work\b",
        r"\b(path|route|idea|approach) (fails|failed|is dead|won't work)",
        r"\bstart (over|again)\b", r"\b(drop|discard|ditch|forget) (that|this|it)\b", r"\bno good\b",
        r"\bgive up on\b", r"\bback to the drawing board\b", r"\bthat route is dead\b", r"\brethink\b",
        r"\bforget (about )?(that|this|it|the|\w+(tion|ing))\b", r"\bthrow(ing)? (it|that|this) (out|away)\b",
        r"\b(multiplication|addition|subtraction|division|that|this) is out\b", r"\bnot that either\b",
        r"\bdrop the\b[^.;]*\b(idea|plan|approach|route)\b",
    ),
    "subgoal_setting": _rx(
        r"\bsub-?goal\b", r"\bbreak (this|it|the problem) down\b",
        rf"\b(first|step one|step 1|step two|step 2|next),? (i (want|need|have) to |let me |i'll |i will )?"
        rf"(make|get|reach|produce|build|form) (a |an |another )?{_NUM}",
        rf"\blet me first (make|get|reach|produce|build) (a |an )?{_NUM}",
        rf"\bi (need|want|have to make|have to get) (a |an |another )?{_NUM} (from|out of|using)\b",
        rf"\b(so|then) i (need|want) (a |an )?{_NUM}\b",
        rf"\bhave to (produce|make|give|equal) {_NUM}\b", rf"\b(get|make) (a |an |another )?{_NUM} (out of|from)\b",
        rf"\bi'd (like|want|need) to (build|make|get|reach) (a |an )?{_NUM}\b",
        rf"\bi'd (want|need|like) (a |an |another )?{_NUM} (from|out of)\b", r"\bmilestone\b",
        r"\b(should|has to|have to|must) (have )?come from\b",
    ),
    "backward_chaining": _rx(
        r"\b(reason|reasoning|work|working|go|going|start|starting|count|counting) (back|backwards?) from\b",
        r"\bfrom the target\b(?! \d)", r"\bworking backwards?\b", r"\bgoing backwards?\b", r"\breasoning backwards?\b",
        rf"\b{_NUM} can be (written|made|expressed) as\b",
        rf"\b{_NUM} (=|is) {_NUM} ?{_OP} ?{_NUM}[^.;\n]*\b(so|which means|means|then) (i|we) (need|want)\b",
        rf"\b{_NUM} ?{_OP} ?{_NUM} ?= ?{_NUM}, so the {_NUM} and {_NUM} (have|need) to\b",
    ),
}
# check verbs count unless the sentence only intends to check ("I should check the final value")
_CHECK = _rx(r"\b(check|verify|double[- ]check|sanity check)(ing|ed|s)?\b\s*[:,-]",  # "Check: ...", "Double-checking:"
             r"\b(let me|i'll|i will|to) (re)?(check|verify|double[- ]check)\b(?! the (instructions|rules|question))")
EXCLUDE = {
    "verification": _rx(r"\b(i have to make|i need to reach|i need to make|find a way to|using the numbers)\b"),
    "backtracking": _rx(r"\b(no need to|don't need to|do not need to|without|never) (backtrack|abandon|start over)"),
    "subgoal_setting": _rx(r"\beach (used )?(exactly )?once\b", r"\bneed to use\b", r"\bcombine\b",
                           rf"\b(reach|make) {_NUM} using\b"),
    "backward_chaining": _rx(r"\b(should|next time|try to|could have) (work|reason)"),
}
# a sentence that only continues the previous sentence's step ("Verify: ... = 13. It equals 15 ...")
_CONTINUES = re.compile(r"^(it|yes|that|and|then|first i want|let me break|subgoal)\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z<])")


def sentences(text: str) -> list[str]:
    return [s.strip() for line in text.splitlines() for s in _SENTENCE.split(line) if s.strip()]


_TARGET = re.compile(rf"\btarget(?: is|:| of| number)?\s+({_NUM})|\b({_NUM}) is the target|\binto ({_NUM})\b", re.I)
_EQUATION = re.compile(rf"\b({_NUM}) (?:=|is) ({_NUM}) ?{_OP} ?({_NUM})")


def _backward_steps(sentence: str, required: set[str]) -> int:
    """Equations `N = a op b` (or `N is a op b`) whose left side is the target or a number already required."""
    steps = 0
    for left, a, b in _EQUATION.findall(sentence):
        if left in required:
            steps += 1
            required.update((a, b))
    return steps


def count_behaviours(text: str) -> dict[str, int]:
    counts = dict.fromkeys(BEHAVIOURS, 0)
    previous = dict.fromkeys(BEHAVIOURS, False)
    target = _TARGET.search(text)
    required = {next(g for g in target.groups() if g)} if target else set()
    for s in sentences(text):
        steps = _backward_steps(s, required)
        for b in BEHAVIOURS:
            hit = bool(CUES[b].search(s)) and not EXCLUDE[b].search(s)
            if b == "verification":
                hit = hit or (bool(_CHECK.search(s)) and not _MODAL.search(s))
            n = max(steps, hit) if b == "backward_chaining" else int(hit)
            if n and not (previous[b] and _CONTINUES.match(s)):
                counts[b] += n
            previous[b] = bool(n)
    return counts


class RulesClassifier(Classifier):
    name = "rules"

    def count(self, texts: Sequence[str]) -> list[dict[str, int]]:
        return [count_behaviours(t) for t in texts]
