"""The frame contract under hypothesis, run as a child process under an address-space limit.

`python -m tests.frame_contract_fuzz --examples N --address-space BYTES` sets RLIMIT_AS
and OpenCV's pixel limit (as the worker does) before cv2 is loaded, then feeds
parse_frame + decode_frame arbitrary Kafka records: header sets with every header at
its extremes, missing, repeated or undecodable, and images that are real PNG/JPEG
files, the same files mutated (bytes flipped, inserted, cut, sizes overwritten, fill
bytes and markers put in), lying JPEGs and plain bytes. The property: a frame comes
back, or FrameRejectedError; nothing else escapes; and once parse_frame has accepted a
frame, OpenCV never has to refuse it for its pixel count (that would mean the contract
read another size than OpenCV does) nor fail to allocate for it. The last line printed
is a JSON report (outcomes by reason, peak RSS); exit code 1 on a falsified property.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import struct
import sys
import uuid
import zlib

BUDGET = 4_000_000  # pixels: a small budget, so an over-budget decode would show
MAX_FRAME_BYTES = 200_000
INPUT_SIZE = 32  # the model input: frames with a side >= 64 take the reduced JPEG decode


def _limit(address_space: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(BUDGET)


def run(examples: int) -> dict:  # noqa: C901 - strategies read best in one place
    import cv2
    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from pipeline.frames import (
        H_CAMERA,
        H_CAPTURED_AT,
        H_CONTENT_TYPE,
        H_FRAME_ID,
        H_HEIGHT,
        H_LINE,
        H_PRODUCT,
        H_SCHEMA,
        H_WIDTH,
        FrameRejectedError,
        RejectReason,
        parse_frame,
        sniff_image,
    )
    from tests.frame_bombs import lying_jpeg
    from workers.streaming.decode import decode_frame

    names = [H_SCHEMA, H_FRAME_ID, H_CAMERA, H_LINE, H_PRODUCT, H_CAPTURED_AT,
             H_CONTENT_TYPE, H_WIDTH, H_HEIGHT]
    extremes = [
        b"", b" ", b"\x00", b"\xff\xfe\xfd", b"\xed\xa0\x80", b"-1", b"0", b"1", b"2",
        b"32768", b"32769", b"2147483648", b"9" * 400, b"1e9", b"1e309", b"NaN", b"inf",
        b"64.0", b"64.5", b"0x40", b"1_000", b"+64", b" 64", "ü".encode(), "😀".encode(),
        b"x" * 5000, b"a" * 64, b"a" * 65, b"a" * 101, b"image/png", b"image/jpeg",
        b"image/gif", b"IMAGE/PNG", b"9999-12-31T23:59:59-14:00",
        b"0001-01-01T00:00:00+14:00", b"9999-12-31T23:59:59+14:00",
        b"0001-01-01T00:00:00-14:00", b"9999-12-31T23:59:59.999999Z",
        b"2026-11-23T08:00:00", b"2026-11-23T08:00:00Z", b"2026-02-30T00:00:00Z",
        b"2026-11-23T08:00:00+24:00", b"1e300", b"-1e300", b"253402300800",
        b"-62135596801", str(uuid.uuid4()).encode(), b"00000000-0000-0000-0000-000000000000",
        b"not-a-uuid",
    ]

    def encoded(array: np.ndarray, ext: str, params: list[int]) -> bytes:
        ok, buf = cv2.imencode(ext, array, params)
        assert ok
        return buf.tobytes()

    rng = np.random.default_rng(31)
    real_files = []
    for w, h in [(1, 1), (8, 8), (17, 5), (64, 48), (100, 70), (300, 64)]:
        noise = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        grey = noise[..., 0].copy()
        real_files += [encoded(noise, ".png", []), encoded(grey, ".png", []),
                       encoded(noise, ".jpg", []), encoded(grey, ".jpg", []),
                       encoded(noise, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                       encoded(noise, ".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 1])]

    sizes = st.one_of(st.integers(1, 600), st.sampled_from([0, 32767, 32768, 65535]),
                      st.integers(0, 65535))

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(real_files)))
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "size",
                                         "marker"]))
            at = draw(st.integers(0, max(0, len(data) - 1)))
            if kind == "flip" and data:
                data[at] ^= draw(st.integers(1, 255))
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif kind == "delete":
                del data[at:at + draw(st.integers(1, 16))]
            elif kind == "truncate":
                del data[at:]
            elif kind == "size":  # overwrite a PNG IHDR or JPEG SOF size
                w, h = draw(sizes), draw(sizes)
                if data[:4] == b"\x89PNG" and len(data) >= 24:
                    data[16:24] = struct.pack(">II", w, h)
                elif (sof := bytes(data).find(b"\xff\xc0")) >= 0 and len(data) >= sof + 9:
                    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
            elif kind == "marker" and len(data) > 2:  # fill, FF 00, RSTn, TEM, SOS, SOI, SOFn
                data[2:2] = draw(st.sampled_from([b"\xff\xff", b"\xff\x00", b"\xff\xd3",
                                                  b"\xff\x01", b"\xff\xda", b"\xff\xd8",
                                                  b"\xff\x00\x10\x00",
                                                  b"\xff\xc2\x00\x11\x08\x75\x30\x75\x30"]))
        return bytes(data)

    def png_declaring(w: int, h: int) -> bytes:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
        return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))

    images = st.one_of(
        st.sampled_from(real_files), mutated(), mutated(),
        st.builds(lying_jpeg, st.tuples(sizes, sizes), st.tuples(sizes, sizes)),
        st.builds(lying_jpeg),
        st.builds(png_declaring, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
        st.binary(max_size=400), st.sampled_from([b"", None]))
    values = st.one_of(st.sampled_from(extremes), st.binary(max_size=40),
                       st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
                       st.none())

    @st.composite
    def records(draw: st.DrawFn) -> tuple[list, bytes | None]:
        image = draw(images)
        try:
            ctype, w, h = sniff_image(image or b"")
        except (ValueError, struct.error):
            ctype, w, h = "image/png", draw(sizes), draw(sizes)
        base = {H_SCHEMA: b"1", H_FRAME_ID: str(uuid.uuid4()).encode(), H_CAMERA: b"cam-1",
                H_LINE: b"line-1", H_PRODUCT: b"widget",
                H_CAPTURED_AT: b"2026-11-23T08:00:00+01:00",
                H_CONTENT_TYPE: ctype.encode(), H_WIDTH: str(w).encode(),
                H_HEIGHT: str(h).encode()}
        headers = list(base.items())
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 4]))):  # often none
            kind = draw(st.sampled_from(["replace", "drop", "repeat", "extra"]))
            name = draw(st.sampled_from(names))
            if kind == "replace":
                headers = [(k, draw(values) if k == name else v) for k, v in headers]
            elif kind == "drop":
                headers = [(k, v) for k, v in headers if k != name]
            elif kind == "repeat":
                headers.append((name, draw(values)))
            else:
                headers.append((draw(st.text(max_size=20)), draw(values)))
        return draw(st.permutations(headers)), image

    outcomes: collections.Counter[str] = collections.Counter()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(records())
    def contract(record: tuple[list, bytes | None]) -> None:
        headers, image = record
        try:
            envelope = parse_frame(headers, image, max_frame_bytes=MAX_FRAME_BYTES,
                                   max_frame_pixels=BUDGET)
        except FrameRejectedError as exc:
            outcomes[f"parse:{exc.reason.value}"] += 1
            return
        try:
            frame = decode_frame(envelope, INPUT_SIZE)
        except FrameRejectedError as exc:
            assert exc.reason is not RejectReason.PIXEL_BUDGET, \
                f"OpenCV refused a frame the contract accepted as {envelope.header}: {exc}"
            assert "nsufficient memory" not in exc.detail and "allocate" not in exc.detail, \
                f"decoding an accepted frame ran out of memory: {exc}"
            outcomes[f"decode:{exc.reason.value}"] += 1
            return
        assert frame.model_input.shape == (INPUT_SIZE, INPUT_SIZE, 3)
        outcomes["decoded"] += 1

    contract()
    return {"outcomes": dict(sorted(outcomes.items())), "examples": sum(outcomes.values()),
            "peak_rss_bytes": _peak_rss_bytes()}


def _peak_rss_bytes() -> int:
    """This process's own high-water mark (VmHWM). Not getrusage's ru_maxrss: Linux keeps
    that across exec, so a child of a large pytest process reports the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--address-space", type=int, default=1536 * 1024**2)
    args = parser.parse_args()
    _limit(args.address_space)  # before numpy and cv2 are loaded
    print(json.dumps(run(args.examples)))


if __name__ == "__main__":
    sys.exit(main())
