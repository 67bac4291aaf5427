"""The small teacher run the engine's lifecycle tests share (fixture ``finished`` in conftest.py)."""
from small_data import TENTH_OF_DIGITS

#: two epochs of digits: ``nasdistill teacher *TEACHER --out-dir DIR``
TEACHER = ["examples/digits_teacher.yaml", "train.epochs=2", "train.batch_size=128", "train.threads=1",
           TENTH_OF_DIGITS]  # two steps an epoch
