"""The floor: a plain Keras script that reads the same CSV and trains/evaluates the same model.

No TFX, no Beam, no tf.data: numpy in, `fit` on a dense matrix, scikit-learn for the test AUC. It prints
one JSON line with its own timings so the pipeline benchmark can compare against it in the same run.

Usage: python -m bench.keras_floor --csv data.csv --epochs N
"""

import argparse
import json
import os
import time

T0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

T_IMPORT = time.perf_counter() - T0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--l2", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    start = time.perf_counter()
    table = np.genfromtxt(args.csv, delimiter=",", names=True)
    names = [n for n in table.dtype.names if n != "label"]
    x = np.stack([table[n] for n in names], axis=1).astype(np.float32)
    y = table["label"].astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    n_train, n_eval = int(0.6 * len(y)), int(0.2 * len(y))
    train, val, test = np.split(order, [n_train, n_train + n_eval])
    mean, std = x[train].mean(0), x[train].std(0) + 1e-12
    x = (x - mean) / std
    keras.utils.set_random_seed(42)
    model = keras.Sequential(
        [
            keras.Input(shape=(x.shape[1],)),
            keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=keras.regularizers.L2(args.l2)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    model.fit(
        x[train],
        y[train],
        validation_data=(x[val], y[val]),
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
    )
    t_train = time.perf_counter() - start
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(y[test], model.predict(x[test], verbose=0).ravel())
    total = time.perf_counter() - T0
    print(
        json.dumps(
            {
                "import_s": T_IMPORT,
                "train_eval_s": time.perf_counter() - start,
                "train_s": t_train,
                "total_s": total,
                "test_auc": auc,
                "epochs": args.epochs,
                # Wall clock at the end of the work, so the benchmark can time launch -> done exactly as
                # it times the pipeline (interpreter shutdown is not work either of them does for a user).
                "work_done_at": time.time(),
            }
        )
    )


if __name__ == "__main__":
    main()
