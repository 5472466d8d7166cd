"""Reading data files, dataset metadata, the datarun's train/test split."""

from atm_core.data.dataset import DatasetInfo, FeatureSchema, inspect_dataset
from atm_core.data.split import TrainTest, load_train_test

__all__ = ["DatasetInfo", "FeatureSchema", "TrainTest", "inspect_dataset", "load_train_test"]
