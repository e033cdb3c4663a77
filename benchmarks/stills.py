"""The CPU cost of one report's still frame: decode one VP8 (or H.264) keyframe with
a fresh decoder and encode it as JPEG (ai_filters/still.py's worker step), on one
thread. A picture with detail (skimage's astronaut, scaled to the size asked) is
encoded as a keyframe by aiortc's own encoder first, as a browser would send it.

    python -m benchmarks.stills [--size 640x480] [--codec VP8] [--runs 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiortc.codecs import get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

from mediaserver.ai_filters.still import StillCapture


def keyframe(codec: RTCRtpCodecParameters, width: int, height: int) -> bytes:
    """One keyframe of the astronaut at width x height, depacketised (as the jitter
    buffer hands it to the decoder)."""
    from aiortc.codecs import depayload
    from PIL import Image
    from skimage.data import astronaut

    rgb = np.asarray(Image.fromarray(astronaut()).resize((width, height)))
    frame = VideoFrame.from_ndarray(rgb, format="rgb24")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    payloads, _ = get_encoder(codec).encode(frame, force_keyframe=True)
    return b"".join(depayload(codec, p) for p in payloads)


async def measure(mime: str, width: int, height: int, runs: int) -> dict[str, object]:
    codec = RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96)
    data = keyframe(codec, width, height)
    with ThreadPoolExecutor(1) as pool:
        capture = StillCapture(mime, 96, pool)
        times, size = [], 0
        for _ in range(runs):
            start = time.perf_counter()
            size = len(capture._decode(JitterFrame(data=data, timestamp=0)))
            times.append(time.perf_counter() - start)
    return {
        "codec": mime,
        "size": f"{width}x{height}",
        "keyframe_bytes": len(data),
        "jpeg_bytes": size,
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--codec", default="VP8", choices=("VP8", "H264"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    result = asyncio.run(measure(f"video/{args.codec}", width, height, args.runs))
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
