"""The small teacher run the engine's lifecycle tests share (fixture ``finished`` in conftest.py)."""

#: two epochs of digits: ``nasdistill teacher *TEACHER --out-dir DIR``
TEACHER = ["examples/digits_teacher.yaml", "train.epochs=2", "train.batch_size=128", "train.threads=1",
           "data.options={test_size: 0.2, train_size: 180}"]  # a tenth of digits for training: two steps an epoch
