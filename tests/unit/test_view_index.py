"""What a point-in-time join reads of a view's table whole: its keys and times, in time order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.offline_join import _view_index, _ViewIndex


def index_of(path: Path) -> _ViewIndex:
    with path.open("rb") as handle:
        return _view_index(handle, "card_id")


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

    index = index_of(path)

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

    index = index_of(path)

    assert index.rows.empty and index.features == ["card_tx_count_1h"]
    assert index.codes_of(pd.Series(["a"])).tolist() == [-1]


def test_a_rewritten_table_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "card_velocity.parquet"
    write_view(path, ["a"], [1], row_group_size=2)
    assert index_of(path).keys.tolist() == ["a"]
    write_view(path, ["a", "b", "b"], [1, 2, 3], row_group_size=2)
    assert index_of(path).rows["_row"].tolist() == [0, 1, 2]


def test_a_join_reads_the_version_it_opened_though_a_landing_replaces_the_file(
    tmp_path: Path,
) -> None:
    # A landing swaps a table in with os.replace while a retrain's join may be reading it: the
    # index and the feature columns must both come from the version the join opened.
    path = tmp_path / "card_velocity.parquet"
    write_view(path, ["a", "b"], [1, 2], row_group_size=2)
    with path.open("rb") as opened_before:
        staged = tmp_path / "staged.parquet"
        write_view(staged, ["c", "c", "a"], [5, 4, 3], row_group_size=2)
        staged.replace(path)
        assert index_of(path).keys[index_of(path).rows["_key"]].tolist() == ["a", "c", "c"]

        index = _view_index(opened_before, "card_id")

        assert index.keys[index.rows["_key"]].tolist() == ["a", "b"]
        column = pq.ParquetFile(opened_before).read(columns=["card_tx_count_1h"]).column(0)
        assert column.take(pa.array(index.rows["_row"])).to_pylist() == [0, 1]
