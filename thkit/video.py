"""Video files with PyAV (its wheel bundles FFmpeg with libx264): the one module of thkit that decodes and
encodes them; datasets (:mod:`thkit.datasets.frames`), inference and the demo all go through it.

* :func:`probe_video` opens a video, decodes its first frame and reports frame rate, size, frame count
  and whether it has audio: an unreadable file fails here, before anything is computed or written.
* :func:`count_frames` counts a video's frames without decoding them (the container's count, else packets).
* :func:`iter_frames` decodes frames as ``(H, W, 3)`` uint8 RGB arrays.
* :func:`write_video` writes a whole ``(T, H, W, 3)`` array at once (datasets, tests; any codec / pixel format).
* :class:`BackgroundIterator` runs any iterator in a thread behind a bounded queue (decoding and
  pre-processing overlap with the model; errors are re-raised in the consumer).
* :class:`VideoWriter` encodes in its own thread (bounded queue) into a temporary file in the output's
  folder, copies (or, when the container needs it, transcodes) the audio of another file, and renames the
  temporary file over the output only when everything succeeded; on failure the temporary file is removed,
  so no partial file is ever left under the output's name.

Failures raise :class:`~thkit.inference.errors.VideoDecodeError` (reading) and
:class:`~thkit.inference.errors.VideoWriteError` (writing), both :class:`~thkit.errors.ThkitError`.
"""
from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from thkit.inference.errors import VideoDecodeError, VideoWriteError, existing_file

__all__ = ["VideoInfo", "probe_video", "count_frames", "iter_frames", "write_video", "as_uint8_frames",
           "BackgroundIterator", "VideoWriter", "OUTPUT_FORMATS", "map_frames"]

#: output extensions -> (video codec, pixel format, audio codecs the container takes as they are, audio fallback)
OUTPUT_FORMATS: dict[str, tuple[str, str, frozenset[str] | None, str]] = {
    ".mp4": ("libx264", "yuv420p", frozenset({"aac", "mp3", "alac", "flac", "opus", "ac3", "eac3"}), "aac"),
    ".m4v": ("libx264", "yuv420p", frozenset({"aac", "mp3", "alac", "ac3", "eac3"}), "aac"),
    ".mov": ("libx264", "yuv420p", frozenset({"aac", "mp3", "alac", "flac", "opus", "ac3", "eac3",
                                              "pcm_s16le", "pcm_s24le", "pcm_f32le"}), "aac"),
    ".mkv": ("libx264", "yuv420p", None, "aac"),  # None: Matroska takes any codec
    ".webm": ("libvpx-vp9", "yuv420p", frozenset({"opus", "vorbis"}), "libopus"),
}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found."""

    path: Path
    fps: Fraction
    width: int
    height: int
    num_frames: int | None  # as stated by the container (None when it does not say)
    has_audio: bool
    audio_codec: str | None


def _av_message(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def probe_video(path: str | os.PathLike, what: str = "video") -> VideoInfo:
    """Open ``path``, decode its first frame and return its :class:`VideoInfo`.

    Raises :class:`InputFileError` when the file does not exist and :class:`VideoDecodeError` when it has no
    video stream or no frame decodes.
    """
    import av

    p = existing_file(path, what, "a video file")
    try:
        with av.open(str(p)) as c:
            if not c.streams.video:
                raise VideoDecodeError(f"{what} {p} has no video stream")
            stream = c.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = Fraction(rate) if rate else Fraction(25)
            if fps <= 0 or fps > 1000:
                fps = Fraction(25)
            audio = c.streams.audio[0] if c.streams.audio else None
            first = None
            for frame in c.decode(stream):
                first = frame
                break
            if first is None:
                raise VideoDecodeError(f"cannot decode {what} {p}: no frame could be decoded")
            return VideoInfo(path=p, fps=fps, width=first.width, height=first.height,
                             num_frames=int(stream.frames) or None, has_audio=audio is not None,
                             audio_codec=audio.codec_context.name if audio is not None else None)
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types
        raise VideoDecodeError(f"cannot decode {what} {p}: {_av_message(e)}") from e


def count_frames(path: str | os.PathLike, what: str = "video") -> int:
    """The number of frames of ``path``'s first video stream, without decoding: the container's count, else its
    packets counted.  :class:`VideoDecodeError` when it cannot be opened, has no video stream or no frame."""
    import av

    p = Path(path)
    try:
        with av.open(str(p)) as c:
            if not c.streams.video:
                raise VideoDecodeError(f"{what} {p} has no video stream")
            stream = c.streams.video[0]
            n = int(stream.frames or 0)
            if n <= 0:  # the container does not say: count packets
                n = sum(1 for packet in c.demux(stream) if packet.size)
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types
        raise VideoDecodeError(f"cannot decode {what} {p}: {_av_message(e)}") from e
    if n <= 0:
        raise VideoDecodeError(f"cannot decode {what} {p}: no frames")
    return n


def iter_frames(path: str | os.PathLike, max_frames: int | None = None, what: str = "video") -> Iterator[np.ndarray]:
    """Decode ``path`` frame by frame: ``(H, W, 3)`` contiguous uint8 RGB arrays."""
    import av

    p = Path(path)
    n = 0
    try:
        with av.open(str(p)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                yield np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
    except GeneratorExit:
        raise
    except Exception as e:  # noqa: BLE001
        raise VideoDecodeError(f"cannot decode {what} {p} (after {n} frames): {_av_message(e)}") from e
    if n == 0:
        raise VideoDecodeError(f"cannot decode {what} {p}: no frame could be decoded")


def as_uint8_frames(frames) -> np.ndarray:
    """``(T, H, W, 3)`` frames (uint8, or float in [0, 1]; NumPy or torch) as a contiguous uint8 array."""
    if hasattr(frames, "detach"):  # a torch tensor
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoWriteError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames)


def _add_video_stream(container, codec: str, fps: Fraction, width: int, height: int, pix_fmt: str, crf: int):
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = int(width), int(height), pix_fmt
    # libvpx (VP8/VP9) needs the bit rate 0 as well to run in constant-quality mode
    stream.options = {"crf": str(int(crf)), "b:v": "0"} if codec.startswith("libvpx") else {"crf": str(int(crf))}
    return stream


def write_video(path: str | os.PathLike, frames, fps: float = 25.0, crf: int = 15, codec: str = "libx264",
                pix_fmt: str = "yuv420p") -> Path:
    """Write ``(T, H, W, 3)`` RGB frames (uint8, or float in [0, 1]) to ``path`` in one go.

    Defaults give a viewable H.264 mp4 (yuv420p, even sizes required by the codec).  ``codec='libx264rgb',
    pix_fmt='rgb24', crf=0`` writes a bit-exact file.  (:class:`VideoWriter` streams frames, with audio.)
    """
    import av

    frames = as_uint8_frames(frames)
    _, h, w, _ = frames.shape
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise VideoWriteError(f"write_video {path}: yuv420p needs even frame sizes, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = _add_video_stream(container, codec, Fraction(fps).limit_denominator(1001), w, h, pix_fmt, crf)
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --------------------------------------------------------------------------------------------------------
# a producer thread behind a bounded queue
# --------------------------------------------------------------------------------------------------------
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class BackgroundIterator:
    """Iterate ``iterable`` in a daemon thread, ``maxsize`` items ahead of the consumer.

    An exception in the thread is re-raised by the consumer's ``next()``.  :meth:`close` (also on exit of a
    ``with`` block) stops the thread.
    """

    def __init__(self, iterable: Iterable[Any], maxsize: int = 8, name: str = "thkit-reader"):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(maxsize)))
        self._stop = threading.Event()
        self._iterable = iterable
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._iterable)
        try:
            for item in it:
                if not self._put(item):
                    break
            else:
                self._put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass

    def __iter__(self) -> BackgroundIterator:
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._stop.set()
            raise StopIteration
        if isinstance(item, _Failure):
            self._stop.set()
            raise item.exc
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------------------
def _default_permissions(path: Path) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode a plain ``open()`` would have (0666 minus the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


class _AudioCopy:
    """Audio packets of ``source`` muxed into ``out`` up to a time (copied, or transcoded when the container
    does not take the codec)."""

    def __init__(self, source: Path, out, copyable: frozenset[str] | None, fallback: str):
        import av

        self._inp = av.open(str(source))
        self._ain = self._inp.streams.audio[0]
        codec = self._ain.codec_context.name
        self.copy = copyable is None or codec in copyable
        if self.copy:
            self.stream = out.add_stream_from_template(self._ain)
        else:
            rate = self._ain.codec_context.sample_rate or 48000
            if fallback == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            self.stream = out.add_stream(fallback, rate=rate)
            self._resampler = av.AudioResampler(format=self.stream.codec_context.format,
                                                layout=self.stream.codec_context.layout, rate=rate)
        self.codec = codec
        self._packets = self._inp.demux(self._ain)
        self._pending = None
        self._done = False
        self._out = out

    def _time(self, packet) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        return float(ts * packet.time_base)

    def mux_until(self, t: float, final: bool = False) -> None:
        """Mux every audio packet that starts before ``t`` seconds (``final``: drop the rest)."""
        while not self._done:
            packet = self._pending
            self._pending = None
            if packet is None:
                try:
                    packet = next(self._packets)
                except StopIteration:
                    self._done = True
                    break
            if packet.dts is None and packet.size == 0:  # demuxer flush packet
                continue
            start = self._time(packet)
            if start is not None and start >= t:
                if final:
                    self._done = True
                else:
                    self._pending = packet
                break
            if self.copy:
                packet.stream = self.stream
                self._out.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None
                    for f in self._resampler.resample(frame):
                        for p in self.stream.encode(f):
                            self._out.mux(p)

    def finish(self, t: float) -> None:
        self.mux_until(t, final=True)
        if not self.copy:
            for f in self._resampler.resample(None):
                for p in self.stream.encode(f):
                    self._out.mux(p)
            for p in self.stream.encode(None):
                self._out.mux(p)
        self.close()

    def close(self) -> None:
        try:
            self._inp.close()
        except Exception:  # noqa: BLE001
            pass


class VideoWriter:
    """Encode ``(H, W, 3)`` uint8 RGB frames at ``fps`` in a background thread; atomic on :meth:`close`.

    Args:
        path: output file; its extension picks the container (see :data:`OUTPUT_FORMATS`).
        fps: frame rate (a :class:`~fractions.Fraction` keeps e.g. 30000/1001 exact).
        width, height: frame size (odd sizes are padded by one pixel: yuv420p needs even sizes).
        audio_from: a media file whose first audio stream is copied into the output (trimmed to the video's
            duration), or None.
        crf: x264 / vp9 constant-rate factor (lower is better; 18 is visually lossless).
        queue_size: frames buffered between the caller and the encoder thread.

    Frames go to a temporary file next to ``path``; :meth:`close` renames it to ``path``, :meth:`abort`
    (or an exception inside a ``with`` block) deletes it.
    """

    def __init__(self, path: str | os.PathLike, fps: Fraction | float, width: int, height: int,
                 audio_from: str | os.PathLike | None = None, crf: int = 18, queue_size: int = 16):
        import av

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in OUTPUT_FORMATS:
            raise VideoWriteError(f"cannot write {self.path}: unsupported extension {suffix or '(none)'!r} "
                                  f"(use one of {', '.join(OUTPUT_FORMATS)})")
        codec, pix_fmt, copyable, fallback = OUTPUT_FORMATS[suffix]
        if self.path.is_dir():
            raise VideoWriteError(f"cannot write {self.path}: it is a folder")
        self.fps = Fraction(fps).limit_denominator(100000)
        self.width, self.height = int(width), int(height)
        self._pad = (self.height % 2, self.width % 2)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=f".partial{suffix}", dir=self.path.parent)
            os.close(fd)
        except OSError as e:
            raise VideoWriteError(f"cannot write {self.path}: {e.strerror or e}") from e
        self.tmp_path = Path(tmp)
        _default_permissions(self.tmp_path)
        self.frames_written = 0
        self.frames_queued = 0
        self.audio_codec: str | None = None
        self.audio_copied = False
        self._closed = False
        self._audio: _AudioCopy | None = None
        try:
            self._out = av.open(str(self.tmp_path), mode="w")
            self._stream = _add_video_stream(self._out, codec, self.fps, self.width + self._pad[1],
                                             self.height + self._pad[0], pix_fmt, crf)
            if audio_from is not None:
                self._audio = _AudioCopy(Path(audio_from), self._out, copyable, fallback)
                self.audio_codec = self._audio.codec
                self.audio_copied = self._audio.copy
        except Exception as e:  # noqa: BLE001
            self._cleanup()
            raise VideoWriteError(f"cannot write {self.path}: {_av_message(e)}") from e
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="thkit-writer", daemon=True)
        self._thread.start()

    # -- encoder thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        import av

        try:
            while True:
                frame = self._queue.get()
                if frame is _END:
                    break
                if frame is None:  # abort
                    return
                if self._pad != (0, 0):
                    frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts = self.frames_written
                vf.time_base = 1 / self.fps
                for packet in self._stream.encode(vf):
                    self._out.mux(packet)
                self.frames_written += 1
                if self._audio is not None:
                    self._audio.mux_until(float(self.frames_written / self.fps))
            for packet in self._stream.encode():
                self._out.mux(packet)
            if self._audio is not None:
                self._audio.finish(float(self.frames_written / self.fps))
        except BaseException as e:  # noqa: BLE001 - reported by write()/close()
            self._error = e
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise VideoWriteError(f"cannot write {self.path}: {_av_message(self._error)}") from self._error

    # -- caller side ------------------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Queue one ``(H, W, 3)`` uint8 RGB frame (blocks while the queue is full)."""
        self._raise_if_failed()
        if self._closed:
            raise VideoWriteError(f"{self.path}: write after close")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise VideoWriteError(f"{self.path}: expected ({self.height}, {self.width}, 3) uint8 frames, got "
                                  f"{tuple(frame.shape)} {frame.dtype}")
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(np.ascontiguousarray(frame), timeout=0.1)
                self.frames_queued += 1
                return
            except queue.Full:
                if not self._thread.is_alive():
                    self._raise_if_failed()
                    raise VideoWriteError(f"cannot write {self.path}: the encoder thread stopped")

    def close(self) -> Path:
        """Finish encoding, close the file and move it to :attr:`path`.  Returns the path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            if self.frames_queued == 0:
                raise VideoWriteError(f"cannot write {self.path}: no frames were produced")
            self._queue.put(_END)
            self._thread.join()
            self._raise_if_failed()
            self._out.close()
            os.replace(self.tmp_path, self.path)
        except BaseException as e:
            self._cleanup()
            if isinstance(e, (VideoWriteError, KeyboardInterrupt)):
                raise
            raise VideoWriteError(f"cannot write {self.path}: {_av_message(e)}") from e
        return self.path

    def abort(self) -> None:
        """Stop the encoder and delete the temporary file (the output path is left untouched)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)
        self._thread.join(timeout=30)
        self._cleanup()

    def _cleanup(self) -> None:
        for closer in (getattr(self, "_audio", None), getattr(self, "_out", None)):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001
                    pass
        try:
            self.tmp_path.unlink(missing_ok=True)
        except OSError:
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def map_frames(fn: Callable[[np.ndarray], Any], frames: Iterable[np.ndarray]) -> Iterator[Any]:
    """``fn`` applied lazily to every frame (a helper for :class:`BackgroundIterator` pipelines)."""
    for f in frames:
        yield fn(f)
