"""Reading the metrics detectron2's JSONWriter writes (``metrics.json``, one JSON object a line)."""
import json
from pathlib import Path
from typing import Dict, List, Union

__all__ = ["final_metrics", "read_metrics"]


def read_metrics(path: Union[str, Path]) -> List[Dict]:
    """The complete records of a ``metrics.json`` ([] if it does not exist yet); a line being
    written (not yet valid JSON) is skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def final_metrics(path: Union[str, Path], prefixes=("bbox/", "segm/", "sem_seg/")) -> Dict[str, float]:
    """The last value of every evaluation metric (keys starting with ``prefixes``) in ``path``."""
    out: Dict[str, float] = {}
    for record in read_metrics(path):
        out.update({k: v for k, v in record.items() if k.startswith(tuple(prefixes))})
    return out
