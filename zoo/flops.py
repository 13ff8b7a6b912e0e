"""Analytic multiply-accumulate (MAC) counts of built Keras models.

`count_macs(model)` adds up, per example, the multiply-adds of the layers that
dominate the cost: convolutions (1D/2D/3D, grouped, depthwise, separable,
transposed) and dense layers (also applied to sequences), reading each
layer's input/output shapes from the built graph.  Bias additions, batch
norm, activations, pooling and element-wise adds are not counted, which is
the convention of the papers' "FLOPs" figures (e.g. ResNet-50: 3.8e9
multiply-adds).  Layers that hide their matmuls inside (attention, RNN cells)
are not counted.  One MAC = 2 FLOPs if you want arithmetic operations.
"""

import math


def _prod(values):
    return math.prod(int(v) for v in values)


def _layer_macs(layer, in_shape, out_shape):
    """MACs per example of one call of `layer` (shapes include the batch axis)."""
    kind = type(layer).__name__
    if kind == "Dense":
        return _prod(out_shape[1:]) * int(in_shape[-1])
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    in_ch = int(in_shape[1] if channels_first else in_shape[-1])
    out_spatial = out_shape[2:] if channels_first else out_shape[1:-1]
    out_ch = int(out_shape[1] if channels_first else out_shape[-1])
    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        kernel = _prod(layer.kernel_size)
        return _prod(out_spatial) * out_ch * kernel * in_ch // layer.groups
    if kind in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        # Every input position scatters a kernel-sized patch to every output channel.
        in_spatial = in_shape[2:] if channels_first else in_shape[1:-1]
        return _prod(in_spatial) * in_ch * _prod(layer.kernel_size) * out_ch
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return _prod(out_spatial) * out_ch * _prod(layer.kernel_size)
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        depth_out = in_ch * layer.depth_multiplier
        depthwise = _prod(out_spatial) * depth_out * _prod(layer.kernel_size)
        return depthwise + _prod(out_spatial) * depth_out * out_ch
    return 0


def _shape(tensor):
    return tuple(tensor.shape)


def count_macs(model):
    """Multiply-accumulates per example of a built functional/sequential Keras model.

    Args:
        model: a built `keras.Model`; nested models are counted through.

    Returns:
        int: MACs for one example at the model's input shape.
    """
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested model
            total += count_macs(layer) * max(1, len(layer._inbound_nodes))
            continue
        for node in layer._inbound_nodes:
            inputs = node.input_tensors
            outputs = node.output_tensors
            if not inputs or not outputs:
                continue
            shapes = [_shape(t) for t in inputs + outputs]
            if any(d is None for s in shapes for d in s[1:]):
                raise ValueError(f"count_macs needs static shapes; layer {layer.name!r} has "
                                 f"input/output shapes {shapes}")
            total += _layer_macs(layer, _shape(inputs[0]), _shape(outputs[0]))
    return total
