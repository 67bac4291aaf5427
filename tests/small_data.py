"""The data of the tests that check behaviour rather than accuracy: small enough that a run is a
step or two and its evaluation."""

#: a tenth of digits for training (180 images, stratified) and the usual fifth for test: a
#: ``data.options`` override of any command
TENTH_OF_DIGITS = "data.options={test_size: 0.2, train_size: 180}"
