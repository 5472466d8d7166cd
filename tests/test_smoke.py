"""The shortest path through the core: enter data, run a worker, load the best model."""

import pandas as pd

from atm_core.dataruns import DatarunRequest, enter_data
from atm_core.driver import Driver
from atm_core.modelhub.models import ClassifierStatus, DatarunStatus


def test_datarun_end_to_end(hub, pollution_path):
    entered = enter_data(hub, DatarunRequest(pollution_path, methods=["logreg", "dt"], budget=6))
    datarun_id = entered.dataruns[0].id
    Driver(hub).run()
    classifiers = hub.classifiers(datarun_id)
    assert len(classifiers) == 6
    assert all(c.status == ClassifierStatus.COMPLETE for c in classifiers)
    assert hub.get_datarun(datarun_id).status == DatarunStatus.COMPLETE
    best = hub.best_classifier(datarun_id)
    model = hub.load_model(best.id)
    frame = pd.read_csv(pollution_path)
    predictions = model.predict(frame.drop(columns=["class"]))
    assert len(predictions) == len(frame)
    assert set(predictions) <= set(frame["class"])
