"""Pretrained-backbone fine-tuning under `tf.distribute` strategies. The
backbones are the zoo models registered with `backbone=True`; fine-tuning
lands with the transfer issue."""
