"""The project's one confusion-matrix figure, and matplotlib without a display."""
from chap_mop.model.ranking import CLASS_NAMES


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures are written on a cluster driver, with no display."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def confusion_figure(matrices: dict[str, list[list[float]]], titles: dict[str, str] | None = None):
    """One heat map per named matrix (counts; rows true class, columns predicted), side by side.

    :param titles: a panel's title by name (default: the name).
    """
    plt = pyplot()
    figure, axes = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.2), layout="constrained",
                                squeeze=False)
    for panel, (name, matrix) in zip(axes[0], matrices.items()):
        panel.imshow(matrix, cmap="Blues")
        peak = max(max(line) for line in matrix)
        for true, line in enumerate(matrix):
            for predicted, count in enumerate(line):
                panel.text(predicted, true, f"{count:g}", ha="center", va="center",
                           color="white" if count > peak / 2 else "black")
        panel.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
        panel.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
        panel.set(xlabel="predicted", ylabel="true", title=(titles or {}).get(name, name))
    return figure
