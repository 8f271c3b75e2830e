"""What a point-in-time join reads of a view's table whole: its keys and times, in time order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.offline_join import _view_index


def write_view(path: Path, keys: list[str], seconds: list[int], row_group_size: int) -> None:
    table = pa.table(
        {
            "card_id": pa.array(keys, pa.string()),
            "event_timestamp": pa.array(
                [s * 1_000_000 for s in seconds], pa.timestamp("us", "UTC")
            ),
            "card_tx_count_1h": pa.array(range(len(keys)), pa.int64()),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def test_keys_of_every_row_group_map_to_one_dictionary_and_rows_keep_file_order_within_an_instant(
    tmp_path: Path,
) -> None:
    # Three row groups, each with a dictionary of its own (b a | c a | b d): the codes must
    # still name the right key, whichever row group a row came from.
    path = tmp_path / "card_velocity.parquet"
    write_view(path, ["b", "a", "c", "a", "b", "d"], [3, 1, 2, 1, 0, 5], row_group_size=2)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3

    index = _view_index(path, "card_id")

    # Stable time order: the two rows at second 1 keep their order in the file (1 before 3).
    assert index.rows["_row"].tolist() == [4, 1, 3, 2, 0, 5]
    assert index.keys[index.rows["_key"]].tolist() == ["b", "a", "a", "c", "b", "d"]
    assert index.rows["_asof"].tolist() == list(
        pd.to_datetime([0, 1, 1, 2, 3, 5], unit="s", utc=True)
    )
    assert str(index.rows["_asof"].dtype) == "datetime64[ns, UTC]"
    assert index.features == ["card_tx_count_1h"]
    assert index.codes_of(pd.Series(["d", "nobody", "a"])).tolist() == [
        index.keys.get_loc("d"),
        -1,
        index.keys.get_loc("a"),
    ]


def test_an_empty_table_has_no_rows_and_knows_no_key(tmp_path: Path) -> None:
    path = tmp_path / "card_velocity.parquet"
    write_view(path, [], [], row_group_size=2)

    index = _view_index(path, "card_id")

    assert index.rows.empty and index.features == ["card_tx_count_1h"]
    assert index.codes_of(pd.Series(["a"])).tolist() == [-1]


def test_a_rewritten_table_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "card_velocity.parquet"
    write_view(path, ["a"], [1], row_group_size=2)
    assert _view_index(path, "card_id").keys.tolist() == ["a"]
    write_view(path, ["a", "b", "b"], [1, 2, 3], row_group_size=2)
    assert _view_index(path, "card_id").rows["_row"].tolist() == [0, 1, 2]
