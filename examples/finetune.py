"""Fine-tuning end to end, offline: pretrain a zoo CNN, then fine-tune it on another task.

    python examples/finetune.py

1. `zoo.train` a CIFAR ResNet-20 on Fashion-MNIST classes 0-4 (T-shirt ... Coat).
2. `transfer.finetune` its backbone on classes 5-9 (Sandal ... Ankle boot) in
   two phases: the new head with the backbone frozen, then the top stage
   unfrozen at a tenth of the learning rate (BatchNorm stays frozen).
3. The result is an ordinary run directory: `zoo evaluate` and `zoo export`
   work on it, and its SavedModel takes the same images as every zoo model.

The same from the command line:

    zoo train resnet20 --data fashion_mnist --classes 0,1,2,3,4 --epochs 2 \\
        --arg input_shape=[28,28,1] --out runs/resnet20_fashion04
    zoo finetune resnet20 --weights runs/resnet20_fashion04 --data fashion_mnist \\
        --classes 5,6,7,8,9 --head-epochs 2 --epochs 2 --unfreeze 1 --out runs/fashion59
    zoo export runs/fashion59

With network access, ImageNet weights: `zoo finetune keras:MobileNetV2 --weights imagenet
--input-size 96 --data folder:photos/` (or `resnet50 --weights imagenet`).
"""

import transfer
import zoo

pre = zoo.train("resnet20", "fashion_mnist", classes=(0, 1, 2, 3, 4), epochs=2,
                model_kwargs={"input_shape": (28, 28, 1)}, run_dir="runs/resnet20_fashion04",
                overwrite=True, export=False)
print("pretrained:", pre.metrics["test_accuracy"])

result = transfer.finetune("resnet20", "fashion_mnist", weights=pre.run_dir,
                           classes=(5, 6, 7, 8, 9), method="two_phase", head_epochs=2,
                           epochs=2, unfreeze=1, run_dir="runs/fashion59", overwrite=True)
print("fine-tuned:", result.metrics["test_accuracy"])
print("phases:", [(p.name, p.start, p.end) for p in result.phases])
print("run directory:", result.run_dir)
