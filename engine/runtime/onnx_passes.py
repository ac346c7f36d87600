"""Small graph clean-ups applied to the export before it is saved.

The tracer turns `x.squeeze(1)` on a tensor whose dim 1 it cannot prove static
(the output of a Resize with computed sizes) into `If(Shape(x)[1] == 1)`. ONNX
shape inference with data propagation *can* prove it, so the If is replaced by the
branch it always takes. ONNX Runtime does not care, but TensorRT imports an If
with a non-constant condition as a conditional layer whose two branches must have
the same rank, which these (rank 3 vs rank 4) do not.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper, shape_inference


def _static_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    dims: dict[str, list[int | None]] = {}
    for v in [*g.value_info, *g.input, *g.output]:
        shape = v.type.tensor_type.shape
        dims[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    return dims


def _const(name: str, producers: dict[str, onnx.NodeProto],
           inits: dict[str, onnx.TensorProto]) -> int | None:  # fmt: skip
    if name in inits:
        return int(numpy_helper.to_array(inits[name]).reshape(-1)[0])
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return int(numpy_helper.to_array(node.attribute[0].t).reshape(-1)[0])
    return None


def _condition(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto],
               inits: dict[str, onnx.TensorProto],
               dims: dict[str, list[int | None]]) -> bool | None:  # fmt: skip
    """Value of If(Equal(Gather(Shape(t), i), c)) when dim i of t is static, else None."""
    eq = producers.get(node.input[0])
    if eq is None or eq.op_type != "Equal":
        return None
    gather, value = producers.get(eq.input[0]), _const(eq.input[1], producers, inits)
    if gather is None or gather.op_type != "Gather" or value is None:
        return None
    shape, index = producers.get(gather.input[0]), _const(gather.input[1], producers, inits)
    if shape is None or shape.op_type != "Shape" or index is None or len(shape.attribute):
        return None
    tensor_dims = dims.get(shape.input[0])
    if tensor_dims is None or index >= len(tensor_dims) or tensor_dims[index] is None:
        return None
    return tensor_dims[index] == value


def fold_static_ifs(model: onnx.ModelProto) -> int:
    """Inline every If whose condition is a statically known dimension test; returns count.

    Repeated until nothing changes: shapes after an If are unknown to inference until
    that If is gone, so each round can prove the next condition.
    """
    total = 0
    while n := _fold_once(model):
        total += n
    return total


def _fold_once(model: onnx.ModelProto) -> int:
    graph = model.graph
    dims = _static_dims(model)
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    folded, nodes = 0, []
    for node in graph.node:
        taken = _condition(node, producers, inits, dims) if node.op_type == "If" else None
        if taken is None:
            nodes.append(node)
            continue
        branch = next(
            a.g for a in node.attribute if a.name == ("then_branch" if taken else "else_branch")
        )
        nodes.extend(branch.node)  # names are unique model-wide: the tracer generates them
        for out, branch_out in zip(node.output, branch.output, strict=True):
            nodes.append(
                helper.make_node("Identity", [branch_out.name], [out], name=f"{node.name}/folded")
            )
        folded += 1
    del graph.node[:]
    graph.node.extend(_live(nodes, {o.name for o in graph.output}))
    return folded


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Nodes that contribute to a graph output (the dead condition chains go)."""
    needed, keep = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
            for attr in node.attribute:  # subgraphs read outer-scope names
                if attr.g.node:
                    needed.update(i for n in attr.g.node for i in n.input)
    return keep[::-1]


def cast_input_first(model: onnx.ModelProto, name: str) -> bool:
    """Make a uint8 graph input feed one Cast to float32 and nothing else.

    The tracer emits Transpose(uint8) -> Cast, and Shape ops on the raw input.
    TensorRT takes UINT8 network inputs only as the input of a cast, so the cast is
    moved to the front; uint8 -> float32 is exact, so the outputs do not change.
    """
    graph = model.graph
    (inp,) = [i for i in graph.input if i.name == name]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        return False
    users = [n for n in graph.node if name in n.input]
    if len(users) == 1 and users[0].op_type == "Cast":
        return False
    cast_out = f"{name}_float"
    for node in users:
        node.input[:] = [cast_out if i == name else i for i in node.input]
    cast = helper.make_node("Cast", [name], [cast_out], name=f"/{name}/Cast",
                            to=onnx.TensorProto.FLOAT)  # fmt: skip
    graph.node.insert(0, cast)
    return True
