"""What an ONNX graph proves about its outputs, read from the proto before anything runs.

fairgate never guesses which column of an output is which class, or whether numbers are
probabilities or logits. The graph often says: sklearn-onnx records the class of every
probability column in the classifier node (``classlabels_*``) and in ZipMap's keys; a label
output computed by ``ArgMax`` holds column positions, one computed by a classifier node or
by ``ArrayFeatureExtractor`` over a constant class list holds class values (and, when its
index is the argmax of a probability output, names that output's columns); values that
come out of ``Softmax``/``Sigmoid``/``Normalizer`` or a classifier with a probability
post-transform are probabilities, values that come out of ``Gemm``/``MatMul`` are logits.
This module reads those facts; :mod:`fairgate.inputs.outputs` decides with them and
refuses where they are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

Scale = Literal["probabilities", "logits"]
LabelMeaning = Literal["class values", "positions"]

#: Ops that move or retype values without changing which column holds which class.
_PASS = frozenset({"Identity", "Cast", "CastLike", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})
#: Ops whose output is probabilities, column for column of their first input.
_NORMALIZING = frozenset({"Softmax", "Sigmoid", "Normalizer"})
#: Ops whose output is unnormalized scores (a network's last layer).
_LINEAR = frozenset({"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "LogSoftmax"})
#: ai.onnx.ml classifiers: output 0 is the label, output 1 the per-class scores.
_CLASSIFIERS = frozenset({"LinearClassifier", "SVMClassifier", "TreeEnsembleClassifier"})
_PROBABILITY_TRANSFORMS = frozenset({"LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"})
_MAX_WALK = 64  # nodes followed back from an output; graphs are acyclic, this bounds the walk


@dataclass(frozen=True)
class OutputFacts:
    """What the graph proves about one output; None where it does not say."""

    name: str
    classes: tuple[Any, ...] | None = None  # class of each column, or of a label output
    classes_from: str = ""  # where ``classes`` came from, said in reports and messages
    scale: Scale | None = None  # float outputs: probabilities or logits
    scale_from: str = ""
    labels: LabelMeaning | None = None  # label outputs: class values or column positions
    argmax_of: str | None = None  # a label output computed by argmax over this value


def output_facts(proto: Any) -> dict[str, OutputFacts]:
    """Facts about every graph output of ``proto`` (ZipMap outputs included)."""
    return _Graph(proto).facts()


class _Graph:
    def __init__(self, proto: Any) -> None:
        graph = proto.graph
        self.outputs = [o.name for o in graph.output]
        self.producer = {out: node for node in graph.node for out in node.output}
        self.constants = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value

    def facts(self) -> dict[str, OutputFacts]:
        facts = {name: self._facts(name) for name in self.outputs}
        # a label output that indexes a class list by argmax names the columns it argmaxes
        for label in facts.values():
            if label.argmax_of is None or label.classes is None:
                continue
            for name, f in facts.items():
                if f.classes is None and f.labels is None and self._argmax_preserving(
                        name, label.argmax_of):
                    facts[name] = replace(f, classes=label.classes, classes_from=(
                        f"the class list its label output {label.name!r} indexes by argmax"))
        return facts

    def _source(self, value: str) -> tuple[Any, str]:
        """The first node behind ``value`` that is not a pass-through op, and its output."""
        node = self.producer.get(value)
        for _ in range(_MAX_WALK):
            if node is None or node.op_type not in _PASS or not node.input:
                break
            value = node.input[0]
            node = self.producer.get(value)
        return node, value

    def _normalizing(self, node: Any) -> bool:
        """Softmax-like ops, and sklearn-onnx's row normalization x / ReduceSum(|x|)."""
        if node.op_type in _NORMALIZING:
            return True
        if node.op_type == "Div" and len(node.input) == 2:
            divisor, _ = self._source(node.input[1])
            return divisor is not None and divisor.op_type == "ReduceSum"
        return False

    def _facts(self, output: str) -> OutputFacts:
        node, value = self._source(output)
        if node is None:
            return OutputFacts(output)
        op = node.op_type
        if op == "ZipMap":
            return OutputFacts(output, _class_labels(node), "the ZipMap keys", "probabilities",
                               "ZipMap")
        if op in _CLASSIFIERS:
            where = f"the {op} node's class labels"
            if value == node.output[0]:
                return OutputFacts(output, _class_labels(node), where, labels="class values")
            transform = _text(_attribute(node, "post_transform", b"NONE"))
            return OutputFacts(output, _class_labels(node), where,
                               "probabilities" if transform in _PROBABILITY_TRANSFORMS else None,
                               f"{op} post_transform {transform}")
        if op == "ArgMax":
            return OutputFacts(output, labels="positions", argmax_of=self._source(node.input[0])[1])
        if op == "ArrayFeatureExtractor" and node.input[0] in self.constants:
            import onnx.numpy_helper

            table = onnx.numpy_helper.to_array(self.constants[node.input[0]]).reshape(-1)
            index, _ = self._source(node.input[1])
            argmax_of = (self._source(index.input[0])[1]
                         if index is not None and index.op_type == "ArgMax" else None)
            return OutputFacts(output, tuple(_plain(v) for v in table.tolist()),
                               "the constant class list its label output indexes",
                               labels="class values", argmax_of=argmax_of)
        if self._normalizing(node):
            classes, where = self._classifier_classes(node.input[0])
            return OutputFacts(output, classes, where, "probabilities", op)
        if op in _LINEAR or (op == "Add" and self._after_linear(node)):
            return OutputFacts(output, scale="logits", scale_from=op if op != "Add" else
                               "MatMul + Add")
        return OutputFacts(output)

    def _classifier_classes(self, value: str) -> tuple[tuple[Any, ...] | None, str]:
        """Class labels of a classifier's scores reached through column-preserving ops."""
        for _ in range(_MAX_WALK):
            node, value = self._source(value)
            if node is None:
                break
            if node.op_type in _CLASSIFIERS and len(node.output) > 1 and value == node.output[1]:
                return _class_labels(node), f"the {node.op_type} node's class labels"
            if not self._normalizing(node):
                break
            value = node.input[0]
        return None, ""

    def _argmax_preserving(self, output: str, target: str) -> bool:
        """Whether ``output``'s columns are ``target``'s, through argmax-preserving ops."""
        value = output
        for _ in range(_MAX_WALK):
            node, value = self._source(value)
            if value == target:
                return True
            if node is None or not self._normalizing(node):
                return False
            value = node.input[0]
        return False

    def _after_linear(self, add: Any) -> bool:
        return any((p := self.producer.get(i)) is not None and p.op_type in _LINEAR
                   for i in add.input)


def _attribute(node: Any, name: str, default: Any = None) -> Any:
    from fairgate.inputs.onnx_proto import attribute_value

    for a in node.attribute:
        if a.name == name:
            return attribute_value(a)
    return default


def _class_labels(node: Any) -> tuple[Any, ...] | None:
    for name in ("classlabels_strings", "classlabels_int64s", "classlabels_ints"):
        values = _attribute(node, name)
        if values:
            return tuple(_plain(v) for v in values)
    return None


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _plain(v: Any) -> Any:
    return _text(v) if isinstance(v, bytes) else v
