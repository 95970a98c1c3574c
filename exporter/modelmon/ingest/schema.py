"""The typed event schema of each configured model, as msgspec structs.

One struct per model, tagged by its ``model`` field, so a body of several
models is decoded in one pass; structure, field types, string lengths and
non-negative times are checked in C.  These structs take only the plainest
spelling of each field (``version`` a string, ``timestamp`` a number,
categorical values strings, every configured feature known...): a body that
does not fit goes through the item-by-item checks in :mod:`.validate`, which
accept the other spellings and name the field of each refused item.  Whatever
fits the struct is accepted by those checks with the same values (the tests
compare both).
"""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any

import msgspec

from ..config import ModelConfig
from ..labelsafe import MAX_LABEL_LENGTH

#: A string that may become a label value (msgspec refuses invalid UTF-8 and lone surrogates itself).
LabelStr = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_LENGTH)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
#: An integer class value: bounded so its decimal string stays a short label value (larger ones go item by item).
ClassInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


def event_struct(model: ModelConfig) -> type[msgspec.Struct]:
    """The plain event of ``model`` as a struct tagged ``model=<name>``."""
    # Numerical features first: a struct's values as a tuple then split into the two kinds by position.
    # gc=False: these structs hold only scalars, so the garbage collector need not track them (decodes ~40 % faster).
    ordered = [f for f in model.features if f.type == "numerical"] + [f for f in model.features if f.type != "numerical"]
    feature_fields: list[tuple[str, Any, Any]] = [
        (f.name, (float | None) if f.type == "numerical" else (LabelStr | None), None) for f in ordered
    ]
    features = msgspec.defstruct("Features", feature_fields, forbid_unknown_fields=True, gc=False)
    attributions = msgspec.defstruct("Attributions", [(f.name, float | None, None) for f in model.features],
                                     forbid_unknown_fields=True, gc=False)
    outcome: Any = (LabelStr | ClassInt | bool | None) if model.task == "classification" else (float | None)
    return msgspec.defstruct(
        "Event",
        [
            ("version", LabelStr | None, None),
            ("id", LabelStr | None, None),
            ("timestamp", NonNegative | None, None),
            ("features", features | None, None),
            ("prediction", outcome, None),
            ("label", outcome, None),
            ("score", float | None, None),
            ("probabilities", dict[str, float] | None, None),
            ("latency_seconds", NonNegative | None, None),
            ("error", LabelStr | bool | None, None),
            ("attributes", dict[str, LabelStr | None] | None, None),
            ("attributions", attributions | None, None),
        ],
        tag_field="model", tag=model.name, forbid_unknown_fields=True, gc=False,
    )


#: Keeps a one-model schema a tagged union, so an item without ``model`` is refused.  Its tag is not a
#: model name, but a client can send it (``"model": "\u0000"``): the validator refuses such an item.
_Sentinel = msgspec.defstruct("NoModel", [], tag_field="model", tag="\x00", forbid_unknown_fields=True)


def batch_decoder(structs: list[type[msgspec.Struct]]) -> msgspec.json.Decoder:
    """A decoder of a JSON array whose items are any of ``structs`` (chosen by their ``model`` tag)."""
    item = functools.reduce(operator.or_, [*structs, _Sentinel])
    return msgspec.json.Decoder(list[item])  # type: ignore[valid-type]
