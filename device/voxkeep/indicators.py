"""What a person sees and touches: the status light, the mute button and the hardware mute switch.

The light is driven from the *real* capture state: the daemon passes ``mic_open`` from the actual
audio stream, so a stream that failed to open or was closed never shows as "listening". Showing a
state only changes pins (gpiozero's blink and pulse run in gpiozero's own background thread), so
``StatusLight.show`` is quick enough to call from the audio loop; it does nothing when nothing changed.

Button and switch callbacks arrive on gpiozero's callback thread. They are meant to call the privacy
state machine's ``request(action, cause)``, which is thread-safe and returns at once; a callback must
never do slow work itself, because gpiozero delivers the next edge only after it returns.

With no GPIO (a laptop, CI) gpiozero's mock pin factory is used and every change of the light is
logged, so the terminal shows what the LED would show.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import GpioSettings
from .errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("listening", "not_recording", "muted")

BLINK_SECONDS = 0.25
"""Half period of the wake-word blink: fast enough to read as "busy", slow enough to see."""
PULSE_SECONDS = 0.6
"""Fade time of the forwarding pulse: slow and smooth, unlike any other pattern."""
BUTTON_BOUNCE_SECONDS = 0.03
"""Contact bounce of a cheap tactile button or toggle switch; edges closer than this are ignored."""

# Colours as (red, green, blue) duty cycles. Green LEDs look brighter, so amber is mostly red.
COLOURS: dict[str, tuple[float, float, float]] = {
    "off": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "amber": (1.0, 0.3, 0.0),
    "white": (1.0, 1.0, 1.0),
    "blue": (0.0, 0.0, 1.0),
    "green": (0.0, 1.0, 0.0),
}


@dataclass(frozen=True)
class LightView:
    """Everything the light depends on, as the daemon knows it right now."""

    mode: str
    """The privacy mode: "listening", "not_recording" or "muted"."""
    mic_open: bool
    """Whether the audio stream is really open (from the stream, not from the mode)."""
    handling_wake: bool = False
    """A wake word was heard and its command window or recording is in progress."""
    forwarding: bool = False
    """Audio is leaving the device to a consented sink."""
    timer: bool = False
    """A Home Assistant timer set through the satellite is running or has just finished (RGB LED only: the
    single LED shows nothing but the microphone's truth)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown privacy mode {self.mode!r}; expected one of {', '.join(MODES)}")

    @property
    def reason(self) -> str:
        """Why the light shows what it shows, in the owner's words (for the log line)."""
        if not self.mic_open:
            return "muted" if self.mode == "muted" else "microphone closed"
        parts = ["listening" if self.mode == "listening" else "not recording"]
        if self.mode == "muted":
            parts = ["muting, microphone still open"]
        if self.handling_wake:
            parts.append("handling wake word")
        if self.forwarding:
            parts.append("sending audio")
        if self.timer:
            parts.append("timer")
        return ", ".join(parts)


@dataclass(frozen=True)
class Pattern:
    """What one light does: a steady colour, blinking it, or pulsing ``pulse`` over it."""

    colour: str
    blink: bool = False
    pulse: str = ""

    def describe(self, single: bool) -> str:
        """"on"/"blinking" for a one-colour LED, "amber"/"blinking white"/... for an RGB one."""
        colour = ("on" if self.colour != "off" else "off") if single else self.colour
        if self.pulse:
            return f"pulsing {self.pulse}" + ("" if colour == "off" else f" over {colour}")
        if self.blink:
            return "blinking" if single else f"blinking {colour}"
        return colour


def single_led_pattern(view: LightView) -> Pattern:
    """One LED: on whenever nothing is being recorded (mode or closed stream), blinking while handling."""
    if not view.mic_open:
        return Pattern("on")
    if view.handling_wake:
        return Pattern("on", blink=True)
    return Pattern("off" if view.mode == "listening" else "on")


def rgb_led_pattern(view: LightView) -> Pattern:
    """RGB LED: red = microphone off, amber = heard but not recorded, blue pulse = audio leaving, green pulse =
    a timer.

    Red follows the closed stream rather than the mode, so red always means "cannot hear you". A
    stream still open in muted mode (a transition, or a fault) shows amber, never red.
    """
    if not view.mic_open:
        base = "red"
    elif view.mode == "listening":
        base = "off"
    else:
        base = "amber"
    if view.forwarding:
        return Pattern(base, pulse="blue")
    if view.handling_wake and view.mic_open:
        return Pattern("white" if base == "off" else base, blink=True)
    if view.timer:  # a green pulse over the microphone's colour, so red still means "cannot hear you"
        return Pattern(base, pulse="green")
    return Pattern(base)


def choose_pin_factory(settings: GpioSettings) -> Any:
    """The gpiozero pin factory: the configured one, else the real one, else the mock one.

    Create it once and pass it to every device, so they share one mock (or one lgpio handle).
    """
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory

    if settings.pin_factory == "mock":
        return _mock_factory()
    if settings.pin_factory:
        from importlib.metadata import entry_points

        for ep in entry_points(group="gpiozero_pin_factories"):
            if ep.name == settings.pin_factory.lower():
                try:
                    return ep.load()()
                except Exception as exc:  # each factory raises its own error types
                    raise ConfigError(f"gpio pin factory '{settings.pin_factory}' cannot start ({exc}); "
                                      "install its library or set gpio.pin_factory to another one") from None
        names = ", ".join(sorted({ep.name for ep in entry_points(group="gpiozero_pin_factories")}))
        raise ConfigError(f"unknown gpio.pin_factory '{settings.pin_factory}'; use one of: {names}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero warns once per factory it tries
            return Device._default_pin_factory()
    except BadPinFactory:
        log.info("no GPIO on this machine: using simulated pins; the light is shown in this log")
        return _mock_factory()


def _mock_factory() -> Any:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    return MockFactory(pin_class=MockPWMPin)  # PWM pins, so an RGB LED can show amber


def _is_mock(factory: Any) -> bool:
    from gpiozero.pins.mock import MockFactory

    return isinstance(factory, MockFactory)


class StatusLight:
    """The status LED (single, RGB, or both). With no LED configured, only the log line shows it."""

    def __init__(self, settings: GpioSettings, *, pin_factory: Any = None) -> None:
        from gpiozero import LED, RGBLED

        self._lock = threading.Lock()
        self._led: Any = None
        self._rgb: Any = None
        self._view: LightView | None = None
        self._patterns: tuple[Pattern, Pattern] | None = None
        if settings.led_pin is None and not settings.rgb_pins:
            self._log_level = logging.INFO
            return
        factory = pin_factory if pin_factory is not None else choose_pin_factory(settings)
        # On real pins the log is for debugging; on simulated ones it is the only "LED" there is.
        self._log_level = logging.INFO if _is_mock(factory) else logging.DEBUG
        try:
            if settings.led_pin is not None:
                self._led = LED(settings.led_pin, pin_factory=factory)
            if settings.rgb_pins:
                red, green, blue = settings.rgb_pins
                self._rgb = RGBLED(red, green, blue, active_high=not settings.rgb_common_anode, pwm=True,
                                   pin_factory=factory)
        except Exception as exc:  # gpiozero raises many types (pin in use, no PWM, bad pin)
            self.close()
            raise ConfigError(f"cannot drive the status LED ({exc}); check gpio.led_pin / gpio.rgb_pins "
                              "against the wiring in hw/README.md") from None

    def show(self, view: LightView) -> None:
        """Make the light show ``view``; quick, and a no-op when the pattern did not change."""
        single, rgb = single_led_pattern(view), rgb_led_pattern(view)
        with self._lock:
            changed = self._patterns != (single, rgb)
            self._view = view
            if not changed:
                return
            self._patterns = (single, rgb)
            if self._led is not None:
                self._apply_single(single)
            if self._rgb is not None:
                self._apply_rgb(rgb)
            text = self._describe_locked()
        log.log(self._log_level, "LED: %s (%s)", text, view.reason)

    def describe(self) -> str:
        """What the light shows now, in words: "off", "on", "blinking", "red", "blinking amber", ..."""
        with self._lock:
            return self._describe_locked()

    def _describe_locked(self) -> str:
        if self._patterns is None:
            return "off"
        single, rgb = self._patterns
        if self._rgb is not None and self._led is not None:
            return f"{single.describe(True)}, RGB {rgb.describe(False)}"
        if self._rgb is not None:
            return rgb.describe(False)
        return single.describe(True)

    def _apply_single(self, pattern: Pattern) -> None:
        if pattern.blink:
            self._led.blink(on_time=BLINK_SECONDS, off_time=BLINK_SECONDS)
        elif pattern.colour == "off":
            self._led.off()
        else:
            self._led.on()

    def _apply_rgb(self, pattern: Pattern) -> None:
        colour = COLOURS[pattern.colour]
        if pattern.pulse:
            self._rgb.pulse(fade_in_time=PULSE_SECONDS, fade_out_time=PULSE_SECONDS,
                            on_color=COLOURS[pattern.pulse], off_color=colour)
        elif pattern.blink:
            self._rgb.blink(on_time=BLINK_SECONDS, off_time=BLINK_SECONDS, on_color=colour,
                            off_color=COLOURS["off"])
        else:
            self._rgb.color = colour

    @property
    def view(self) -> LightView | None:
        """The last view shown (None before the first ``show``)."""
        return self._view

    def close(self) -> None:
        """Release the pins (the LED goes dark, as it does when the daemon is not running)."""
        for device in (self._led, self._rgb):
            if device is not None:
                device.close()
        self._led = self._rgb = None


class MuteButton:
    """The mute button: a short press toggles mute, a long press re-enables recording.

    A press is only classed on release (or when it has been held long enough), so a long press never
    also counts as a short one. Wiring: button between the pin and GND; the internal pull-up is used.
    """

    def __init__(self, settings: GpioSettings, *, on_press: Callable[[], None],
                 on_long_press: Callable[[], None], pin_factory: Any = None) -> None:
        from gpiozero import Button

        if settings.button_pin is None:
            raise ConfigError("no mute button configured; set gpio.button_pin to the button's BCM pin")
        factory = pin_factory if pin_factory is not None else choose_pin_factory(settings)
        self._on_press = on_press
        self._on_long_press = on_long_press
        self._held = False
        self._button = _open_input(lambda: Button(settings.button_pin, pull_up=True,
                                                  bounce_time=BUTTON_BOUNCE_SECONDS,
                                                  hold_time=settings.long_press_seconds,
                                                  pin_factory=factory), "gpio.button_pin")
        self._button.when_pressed = self._pressed
        self._button.when_held = self._long
        self._button.when_released = self._released

    def _pressed(self) -> None:
        self._held = False

    def _long(self) -> None:
        self._held = True
        self._on_long_press()

    def _released(self) -> None:
        if not self._held:
            self._on_press()
        self._held = False

    def close(self) -> None:
        """Release the pin."""
        self._button.close()


class MuteSwitch:
    """A hardware mute switch; while it is engaged no software path may unmute.

    Fail-safe wiring: the switch closes the pin to GND when the microphone is *allowed*, and opens
    it to mute. A broken wire or an unplugged switch therefore reads as engaged (muted), never as
    "microphone allowed".
    """

    def __init__(self, settings: GpioSettings, *, on_change: Callable[[bool], None], pin_factory: Any = None) -> None:
        from gpiozero import DigitalInputDevice

        if settings.mute_switch_pin is None:
            raise ConfigError("no mute switch configured; set gpio.mute_switch_pin to the switch's BCM pin")
        factory = pin_factory if pin_factory is not None else choose_pin_factory(settings)
        self._input = _open_input(lambda: DigitalInputDevice(settings.mute_switch_pin, pull_up=True,
                                                             bounce_time=BUTTON_BOUNCE_SECONDS,
                                                             pin_factory=factory), "gpio.mute_switch_pin")
        # Closed contact = pin pulled low = "active" to gpiozero = microphone allowed.
        self._input.when_activated = lambda: on_change(False)
        self._input.when_deactivated = lambda: on_change(True)

    @property
    def engaged(self) -> bool:
        """Whether the switch says "muted" right now; the daemon reads it once at start-up."""
        return not self._input.is_active

    def close(self) -> None:
        """Release the pin."""
        self._input.close()


def _open_input(make: Callable[[], Any], key: str) -> Any:
    """Create a gpiozero input, turning its many exception types into one ConfigError line."""
    try:
        return make()
    except Exception as exc:  # pin in use, no such pin, no pull-up on that pin, ...
        raise ConfigError(f"cannot use the pin in {key} ({exc}); check it against the wiring in hw/README.md "
                          "and that no other program uses it") from None
