"""What the gateway's seam to the banks passes on of its callers' metadata: request ids,
bounded per call, whatever a caller sends."""

from __future__ import annotations

from server.gateway.banks import MAX_REQUEST_ID_LENGTH, MAX_REQUEST_IDS_BYTES, request_metadata


def test_a_request_id_too_long_or_too_strange_to_pass_on_is_left_out() -> None:
    assert request_metadata(["r" * (MAX_REQUEST_ID_LENGTH + 1)]) == ()
    assert request_metadata(["", "ok", "ok", "é", "a,b", "a b", "x\n"]) == (("x-request-id", "ok"),)


def test_a_round_s_request_ids_fit_in_a_bounded_header() -> None:
    ids = [f"{number:03d}-" + "x" * (MAX_REQUEST_ID_LENGTH - 4) for number in range(256)]
    [(name, header)] = request_metadata([*ids, "r" * 2000])
    assert name == "x-request-id"
    assert len(header.encode()) <= MAX_REQUEST_IDS_BYTES
    sent = header.split(",")
    assert sent == ids[: len(sent)], "whole ids, in order"
    assert len(sent) == (MAX_REQUEST_IDS_BYTES + 1) // (MAX_REQUEST_ID_LENGTH + 1)
