"""How each dataset is named in tables, captions and reports (one place, read by render and
likelihood_text; neither imports the other's way back)."""

DATASET_LABELS = {"mnist": "MNIST", "omniglot": "OMNIGLOT", "svhn": "SVHN", "cifar10": "CIFAR10",
                  "celeba": "CelebA", "binarized_mnist": "Binary MNIST (CNN)",
                  "binarized_mnist_fc": "Binary MNIST (FC)"}
