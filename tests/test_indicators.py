"""The status light, mute button and mute switch on gpiozero's simulated pins (there is no GPIO in CI)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from tests.helpers import wait_until
from voxkeep.config import GpioSettings
from voxkeep.errors import ConfigError
from voxkeep.indicators import LightView, MuteButton, MuteSwitch, StatusLight, choose_pin_factory

LED, RED, GREEN, BLUE, BUTTON, SWITCH = 17, 5, 6, 13, 27, 22


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory(pin_class=MockPWMPin)


def distinct_states(factory: MockFactory, pin: int) -> set[float]:
    return {round(float(s.state), 2) for s in factory.pin(pin).states}


@pytest.mark.parametrize(("view", "lit", "words"), [
    (LightView("listening", mic_open=True), False, "off"),
    (LightView("not_recording", mic_open=True), True, "on"),
    (LightView("muted", mic_open=False), True, "on"),
    # The mode says listening but the stream is closed: the light must not say "listening".
    (LightView("listening", mic_open=False), True, "on"),
    (LightView("not_recording", mic_open=False), True, "on"),
])
def test_single_led_is_on_whenever_nothing_is_recorded(factory, view, lit, words):
    light = StatusLight(GpioSettings(led_pin=LED), pin_factory=factory)
    light.show(view)
    assert bool(factory.pin(LED).state) is lit
    assert light.describe() == words
    light.close()


def test_single_led_blinks_while_a_wake_word_is_handled_then_settles(factory):
    light = StatusLight(GpioSettings(led_pin=LED), pin_factory=factory)
    light.show(LightView("listening", mic_open=True))
    factory.pin(LED).clear_states()
    light.show(LightView("listening", mic_open=True, handling_wake=True))
    assert light.describe() == "blinking"
    # The pin really toggles on gpiozero's thread: on, off, on again.
    assert wait_until(lambda: [s.state for s in factory.pin(LED).states][1:4] == [True, False, True])
    light.show(LightView("listening", mic_open=True))
    assert light.describe() == "off"
    assert not factory.pin(LED).state
    light.close()


def test_closed_stream_stops_the_blink(factory):
    """Handling cannot go on with the microphone closed; the light says 'not hearing you' steadily."""
    light = StatusLight(GpioSettings(led_pin=LED), pin_factory=factory)
    light.show(LightView("listening", mic_open=True, handling_wake=True))
    light.show(LightView("listening", mic_open=False, handling_wake=True))
    assert light.describe() == "on"
    factory.pin(LED).clear_states()
    stop = threading.Event()
    stop.wait(3 * 0.25)  # longer than a blink half-period
    assert [s.state for s in factory.pin(LED).states] == [True]
    light.close()


@pytest.mark.parametrize(("view", "colour", "rgb"), [
    (LightView("muted", mic_open=False), "red", (1.0, 0.0, 0.0)),
    (LightView("not_recording", mic_open=True), "amber", (1.0, 0.3, 0.0)),
    (LightView("listening", mic_open=True), "off", (0.0, 0.0, 0.0)),
    (LightView("listening", mic_open=False), "red", (1.0, 0.0, 0.0)),
    # A muted mode whose stream is somehow still open must not claim the microphone is off.
    (LightView("muted", mic_open=True), "amber", (1.0, 0.3, 0.0)),
])
def test_rgb_led_colours(factory, view, colour, rgb):
    light = StatusLight(GpioSettings(rgb_pins=[RED, GREEN, BLUE]), pin_factory=factory)
    light.show(view)
    assert light.describe() == colour
    assert tuple(round(float(factory.pin(p).state), 2) for p in (RED, GREEN, BLUE)) == rgb
    light.close()


def test_common_anode_rgb_led_is_driven_inverted(factory):
    light = StatusLight(GpioSettings(rgb_pins=[RED, GREEN, BLUE], rgb_common_anode=True), pin_factory=factory)
    light.show(LightView("muted", mic_open=False))
    assert tuple(round(float(factory.pin(p).state), 2) for p in (RED, GREEN, BLUE)) == (0.0, 1.0, 1.0)
    light.close()


def test_rgb_pulses_blue_while_audio_leaves_the_device(factory):
    light = StatusLight(GpioSettings(rgb_pins=[RED, GREEN, BLUE]), pin_factory=factory)
    light.show(LightView("listening", mic_open=True, forwarding=True))
    assert light.describe() == "pulsing blue"
    # A pulse fades: the blue pin passes through intermediate levels, red and green stay dark.
    assert wait_until(lambda: len(distinct_states(factory, BLUE) - {0.0, 1.0}) >= 3)
    assert distinct_states(factory, RED) <= {0.0}
    light.show(LightView("not_recording", mic_open=True))
    assert light.describe() == "amber"
    light.close()


def test_rgb_blinks_white_while_handling(factory):
    light = StatusLight(GpioSettings(rgb_pins=[RED, GREEN, BLUE]), pin_factory=factory)
    light.show(LightView("listening", mic_open=True, handling_wake=True))
    assert light.describe() == "blinking white"
    assert wait_until(lambda: {0.0, 1.0} <= distinct_states(factory, GREEN))
    light.close()


def test_every_change_is_logged_once_for_the_terminal(factory, caplog):
    light = StatusLight(GpioSettings(led_pin=LED), pin_factory=factory)
    with caplog.at_level(logging.INFO, logger="voxkeep.indicators"):
        light.show(LightView("listening", mic_open=True))
        light.show(LightView("not_recording", mic_open=True))
        light.show(LightView("not_recording", mic_open=True))  # no change: no line
    assert [r.getMessage() for r in caplog.records] == ["LED: off (listening)", "LED: on (not recording)"]
    light.close()


def test_no_led_configured_still_shows_the_state_in_the_log(caplog):
    light = StatusLight(GpioSettings())
    with caplog.at_level(logging.INFO, logger="voxkeep.indicators"):
        light.show(LightView("muted", mic_open=False))
    assert light.describe() == "on"
    assert caplog.records[-1].getMessage() == "LED: on (muted)"


def test_laptop_falls_back_to_simulated_pins_with_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="voxkeep.indicators"):
        chosen = choose_pin_factory(GpioSettings())
    assert isinstance(chosen, MockFactory)
    assert len(caplog.records) == 1 and "simulated pins" in caplog.records[0].getMessage()


def test_unknown_pin_factory_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"gpio.pin_factory 'banana'.*mock"):
        choose_pin_factory(GpioSettings(pin_factory="banana"))


def test_pin_used_twice_is_a_config_error(factory):
    light = StatusLight(GpioSettings(led_pin=LED), pin_factory=factory)
    with pytest.raises(ConfigError, match=r"gpio.button_pin"):
        MuteButton(GpioSettings(button_pin=LED), on_press=lambda: None, on_long_press=lambda: None,
                   pin_factory=factory)
    light.close()


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown privacy mode"):
        LightView("sleeping", mic_open=True)


class Calls:
    """Records callbacks from gpiozero's thread and lets the test wait for them."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.arrived = threading.Event()

    def record(self, name: str) -> Callable[[], None]:
        def callback() -> None:
            self.names.append(name)
            self.arrived.set()
        return callback


def test_short_press_toggles_once_and_is_not_a_long_press(factory):
    calls = Calls()
    button = MuteButton(GpioSettings(button_pin=BUTTON, long_press_seconds=5.0),
                        on_press=calls.record("press"), on_long_press=calls.record("long"), pin_factory=factory)
    pin = factory.pin(BUTTON)
    pin.drive_low()
    assert calls.names == []  # classed on release, so a long press is never also a short one
    pin.drive_high()
    assert calls.arrived.wait(2)
    assert calls.names == ["press"]
    button.close()


def test_long_press_reenables_recording_without_a_toggle(factory):
    calls = Calls()
    button = MuteButton(GpioSettings(button_pin=BUTTON, long_press_seconds=0.1),
                        on_press=calls.record("press"), on_long_press=calls.record("long"), pin_factory=factory)
    pin = factory.pin(BUTTON)
    pin.drive_low()
    assert calls.arrived.wait(3)
    pin.drive_high()
    assert calls.names == ["long"]
    button.close()


def test_mute_switch_state_is_read_at_start_up_and_reported_on_change(factory):
    changes: list[bool] = []
    settings = GpioSettings(mute_switch_pin=SWITCH)
    switch = MuteSwitch(settings, on_change=changes.append, pin_factory=factory)
    # Nothing connected (open contact) reads as engaged: a cut wire keeps the speaker muted.
    assert switch.engaged is True
    factory.pin(SWITCH).drive_low()
    assert switch.engaged is False
    factory.pin(SWITCH).drive_high()
    assert switch.engaged is True
    assert changes == [False, True]
    switch.close()

