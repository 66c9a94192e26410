"""The report says where a model kept a change of the harness's training path out, and which setting it changed."""

from harness.report.tables import training_notes


def _rec(method, train):
    return {"task": "cnn", "method": method, "dir": f"/r/cnn/{method}", "train": train,
            "config": {"hyperparameters": {"seed": 0}}, "status": {"status": "ok"}}


def test_a_change_the_model_kept_out_is_named_with_its_reason():
    records = [
        _rec("lora", {"trl_changes": {"applied": ["padding_free"], "left_out": {},
                                      "not_applicable": {"float32_adapters": "the base weights are not 4/8-bit"}}}),
        _rec("full", {"trl_changes": {"applied": [], "not_applicable": {},
                                      "left_out": {"padding_free": "the model runs on eager attention"}},
                      "lora_dropout": None}),
        _rec("qlora", {"trl_changes": {"applied": [], "left_out": {}, "not_applicable": {}},
                       "lora_dropout": "0 instead of 0.05: the experts are fused"}),
    ]
    assert training_notes(records) == [
        "Training path of cnn x full: padding-free left to trl (the model runs on eager attention).",
        "Training path of cnn x qlora: LoRA dropout 0 instead of 0.05: the experts are fused."]
