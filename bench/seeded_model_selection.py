"""``model_selection.py`` with each configuration's initial weights fixed by a seed.

model_selection.py takes no seed, so two runs start every configuration from different random
weights. To compare a configuration trained with model hopping against the same configuration
trained alone, both must start from the same weights: this calls
``tf.keras.utils.set_random_seed(seed)`` right before each configuration's model is built, as
``bench/single_worker.py one-by-one`` does. Nothing else changes.

    python -m bench.seeded_model_selection SEED [model_selection.py flags]
"""
import sys

import model_selection


def main() -> None:
    seed = int(sys.argv.pop(1))
    build_estimator = model_selection.estimator_gen_fn

    def seeded_estimator_gen_fn(params: dict, batch_size: int):
        import tensorflow as tf
        tf.keras.utils.set_random_seed(seed)
        return build_estimator(params, batch_size)

    model_selection.estimator_gen_fn = seeded_estimator_gen_fn  # make_search looks the name up at call time
    sys.argv[0] = "model_selection.py"
    model_selection.main()


if __name__ == "__main__":
    main()
