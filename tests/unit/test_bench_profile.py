"""``python -m bench.profile_forward``: how collapsed stacks are summed by part of the process."""

from __future__ import annotations

from pathlib import Path

from bench.profile_forward import by_part, part_of


def test_a_frame_belongs_to_the_first_part_whose_file_it_names() -> None:
    assert (
        part_of("ClientSession._request (aiohttp/client.py:819)")
        == "HTTP: aiohttp, yarl, multidict"
    )
    assert part_of("_Driver.run (consumer/adapters/curl_transport.py:331)") == (
        "HTTP: the libcurl transport and its thread"
    )
    assert part_of("_event (consumer/domain/event_forms.py:376)") == (
        "event model: event_forms, events, triage"
    )
    assert part_of("order_body (consumer/domain/button_wire.py:152)") == (
        "Button client: button_client, transport, wire"
    )
    assert part_of("process (consumer/domain/mapping.py:233)") == (
        "mapping and profile: the rest of the domain"
    )
    assert part_of("Pipeline._handle (consumer/engine/pipeline.py:201)") == "pipeline"
    assert part_of("Dispatcher._run_lane (consumer/engine/dispatcher.py:434)") == (
        "dispatcher, worker, limiter, watermarks"
    )
    assert part_of("<module> (button-consumer:6)") is None


def test_each_sample_counts_for_its_innermost_frame_with_a_part(tmp_path: Path) -> None:
    """A C call made from aiohttp, under the pipeline and asyncio, counts for HTTP; a stack with
    no known frame counts as other; a torn line is skipped."""
    collapsed = tmp_path / "stacks.txt"
    collapsed.write_text(
        "run (asyncio/base_events.py:1);handle (consumer/engine/pipeline.py:2);"
        "send (aiohttp/client.py:3);<native> 3\n"
        "run (asyncio/base_events.py:1);handle (consumer/engine/pipeline.py:2) 1\n"
        "<module> (button-consumer:6) 1\n"
        "torn line without a count\n"
    )
    assert by_part(collapsed).splitlines() == [
        "by part (innermost frame):",
        "   60.0%  HTTP: aiohttp, yarl, multidict",
        "   20.0%  pipeline",
        "   20.0%  other",
    ]
