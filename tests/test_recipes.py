"""Mix recipes (msaas/recipes.py) made canonical, the render command and the bound on a process' renders
(msaas/rendering.py): pure logic."""

from __future__ import annotations

import threading
import time

import pytest

from msaas.errors import BadRequest, TooLarge, TooManyCalls
from msaas.recipes import Recipe
from msaas.rendering import Turns, command

TRACKS = ("vocals", "drums", "bass", "other")


def bound(values: object, tracks: tuple[str, ...] = TRACKS):
    return Recipe.parse(values, "htdemucs").bind(tracks)


def test_one_mix_however_its_recipe_is_written():
    shortcut = bound({"preset": "instrumental"})
    assert shortcut.gains == {"vocals": None, "drums": 0.0, "bass": 0.0, "other": 0.0}
    spelled = bound({"mute": ["vocals"], "gains": {"drums": -0.0, "bass": 0, "vocals": 12}, "format": "mp3",
                     "mp3_bitrate": 320, "sample_format": "int16"})
    assert spelled.digest == shortcut.digest and spelled.canonical() == shortcut.canonical()
    assert bound({"preset": "instrumental", "format": "wav"}).digest != shortcut.digest
    assert bound({"preset": "instrumental", "gains": {"drums": -6}}).digest != shortcut.digest
    assert bound({"preset": "no_drums"}).gains == {"vocals": 0.0, "drums": None, "bass": 0.0, "other": 0.0}
    assert bound({"preset": "acappella"}).sources() == [("vocals", 1.0)]
    assert bound({"mute": list(TRACKS)}).sources() == [("vocals", 0.0)]  # silence, as long as the song
    assert bound({"gains": {"drums": -6}}).sources()[1] == ("drums", pytest.approx(0.501187, abs=1e-6))
    assert bound({}, ("vocals", "no_vocals", "residual")).gains == {"vocals": 0.0, "no_vocals": 0.0, "residual": 0.0}
    assert bound({"preset": "instrumental"}, ("vocals", "no_vocals", "residual")).sources() == [
        ("no_vocals", 1.0), ("residual", 1.0)]  # the song less the vocals, exactly


@pytest.mark.parametrize(("values", "tracks", "why"), [
    ({"gains": {"drums": float("nan")}}, TRACKS, "from -120 to 24"),
    ({"gains": {"drums": 24.000001}}, TRACKS, "from -120 to 24"),
    ({"gains": {"drums": 10**400}}, TRACKS, "from -120 to 24"),
    ({"gains": {"drums": None}}, TRACKS, "from -120 to 24"),
    ({"gains": ["drums"]}, TRACKS, "gains must be an object"),
    ({"gains": {f"t{n}": 0 for n in range(33)}}, TRACKS, "at most 32"),
    ({"mute": "vocals"}, TRACKS, "mute must be a list"),
    ({"mute": [""]}, TRACKS, "is not a track name"),
    ({"mute": ["x" * 41]}, TRACKS, "is not a track name"),
    ({"preset": 3}, TRACKS, "preset must be a name"),
    ({"preset": "instrumental"}, ("drums", "bass"), "needs a vocals track"),
    ({"preset": "no_guitar"}, TRACKS, "unknown preset"),
    ({"gains": {"residual": 3}}, TRACKS, "no track 'residual'"),
    ("mute everything", TRACKS, "a JSON object"),
])
def test_recipes_that_are_not_one_are_refused_saying_why(values, tracks, why):
    with pytest.raises(BadRequest) as refused:
        bound(values, tracks)
    assert why in refused.value.message and refused.value.code == "invalid_recipe"


def test_a_process_renders_a_few_mixes_at_once_within_a_size():
    turns = Turns(2, 100)
    with pytest.raises(TooLarge):  # larger than all the room: refused at once, never waited for
        with turns.turn(101, 10):
            pass
    with turns.turn(60, 0), turns.turn(10, 0):
        with pytest.raises(TooManyCalls):  # a third at once
            with turns.turn(1, 0.1):
                pass
    with turns.turn(60, 0):
        with pytest.raises(TooManyCalls):  # no room for its output
            with turns.turn(41, 0.1):
                pass
    entered = threading.Event()

    def second() -> None:
        with turns.turn(50, 5):
            entered.set()

    with turns.turn(60, 0):
        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.2)
        assert not entered.is_set()  # waits its turn...
    waiting.join(5)
    assert entered.is_set() and (turns.running, turns.held) == (0, 0)  # ...and has it once the first is done


def test_the_render_reads_only_the_stores_links_in_the_tracks_formats_and_writes_no_tags(tmp_path):
    mix = bound({"gains": {"drums": -6}, "mute": ["vocals"], "format": "flac"})
    line = command([("http://store/a", 1.0), ("http://store/b", 0.5)], tmp_path / "out.flac", mix)
    assert line.count("-protocol_whitelist") == 2
    assert line[line.index("-protocol_whitelist") + 1] == "http,https,tcp,tls"
    graph = line[line.index("-filter_complex") + 1]
    assert graph == ("[0:a]volume=1.0:precision=double[a0];[1:a]volume=0.5:precision=double[a1];"
                     "[a0][a1]amix=inputs=2:normalize=0:duration=longest[mix]")
    assert ["-map_metadata", "-1"] == line[line.index("-map_metadata"):line.index("-map_metadata") + 2]
    assert line[-1] == f"file:{tmp_path / 'out.flac'}" and "-sample_fmt" in line
    alone = command([("http://store/a", 0.25)], tmp_path / "out.wav", bound({"format": "wav",
                                                                             "sample_format": "float32"}))
    assert alone[alone.index("-filter_complex") + 1] == "[0:a]volume=0.25:precision=double[mix]"
    assert "pcm_f32le" in alone
