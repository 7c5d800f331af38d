"""make demo-classify at smoke size: the MAE pre-training command, four classify.py runs (HPViT and
its plain twin, from the MAE and from scratch) as real subprocesses, and the table they make."""
import json

from hpvit_lab import demo_classify


def test_demo_classify_end_to_end_at_smoke_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out, mae = tmp_path / "demo", tmp_path / "mae"
    records = demo_classify.run_demo([
        "--epochs", "1", "--train-per-class", "8", "--val-per-class", "2", "--mae-steps", "2",
        "--mae-images", "8", "--output-dir", str(out), "--mae-dir", str(mae)])
    printed = capsys.readouterr().out
    assert "python -m hpvit_lab.pretrain_mae" in printed and "hpvit_d2.cli.classify" in printed
    assert {(r["model"], r["init"]) for r in records} == {
        ("hpvit", "mae"), ("hpvit", "scratch"), ("plain", "mae"), ("plain", "scratch")}
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == records and saved["wall_seconds"] > 0
    for record in records:
        assert 0 <= record["top1"] <= 100 and record["epochs"] == 1 and record["s_per_epoch"] > 0
    # The MAE runs loaded the shared MAE directory completely (strict), the scratch runs nothing.
    for model in ("hpvit", "plain"):
        log = (out / f"{model}_mae.log").read_text()
        assert "(Hugging Face ViTMAE, converted into the backbone)" in log, log[-2000:]
        assert "Hugging Face ViTMAE" not in (out / f"{model}_scratch.log").read_text()
    by = {(r["model"], r["init"]): r for r in records}
    # The detection configs' trunk: stages (1, 1, 3, 1) and their pooling (conv pools add weights).
    label = by["hpvit", "mae"]["label"]
    assert label.startswith("HPViT-tiny (1,1,3,1) ")
    more = by["hpvit", "mae"]["params_m"] - by["plain", "mae"]["params_m"]
    assert more > 0 if label.endswith("conv") else abs(more) < 0.01
    table = (out / "comparison.md").read_text()
    assert table.count("\n| ") == 4 and label in table
    assert (mae / "model.safetensors").is_file()
