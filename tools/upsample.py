"""Upsample the features of a timm encoder with AnyUp and save a PCA visualisation.

Example:
    python tools/upsample.py photo.jpg --encoder vit_small_patch14_dinov2 \\
        --checkpoint dinov2_vits14.pth --upsampler-checkpoint anyup_multi_backbone.pth \\
        --output outputs/photo_anyup.png --save-features outputs/photo_anyup.pt

What it does:
    1. Loads the image (default: the bundled synthetic sample picture), resizes it so its
       short side is --size pixels (bicubic), then centre-crops each side down to a multiple of
       the encoder's patch size (its feature stride), so the feature grid tiles the image
       exactly. The crop removes fewer than patch-size pixels per side.
    2. Normalises it with the ImageNet mean/std and runs the frozen timm encoder
       (FrozenTimmEncoder, which re-normalises for models such as CLIP/SigLIP).
    3. Upsamples the chosen layer's features to the image size with AnyUp.
    4. Writes a PNG panel: image | low-res features (PCA) | upsampled features (same PCA),
       each tile the size of the cropped image; optionally a .pt file with the tensors
       {'lowres': (1, C, h, w), 'upsampled': (1, C, H, W), 'image': (1, 3, H, W), ...}.

Weights:
    The encoder loads --checkpoint (a local file) or else timm's pretrained weights, which need
    network access or timm's cache. AnyUp loads --upsampler-checkpoint (a local file or a
    published name) or else the published 'anyup_multi_backbone' checkpoint (downloaded, or
    found in torch's hub cache). With --random-weights, every component without a local
    checkpoint is randomly initialised instead and nothing is downloaded: the output then shows
    no learned upsampling and is only good for testing the pipeline. Without network access,
    timm's Hugging Face downloader retries for about a minute before giving up; set
    HF_HUB_OFFLINE=1 to make it fail at once.

Outputs are written atomically (temporary file in the same folder, then renamed): a run that
fails leaves no partial or stale-looking output behind.

The AnyUp weights are by Wimmer et al. ("AnyUp: Universal Feature Upsampling", ICLR 2026),
licensed CC-BY-4.0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from anyup_plugin.apis import load_image, sample_image_path, save_upsampled_features, upsample_image

DEFAULT_ENCODER = 'vit_small_patch14_dinov2'
DEFAULT_UPSAMPLER = 'anyup_multi_backbone'
DEFAULT_OUTPUT = Path('outputs') / 'anyup_demo.png'


class ToolError(Exception):
    """A failure with a message meant for the user (no traceback)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n', 1)[0],
        epilog=__doc__.split('\n\n', 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        'image',
        nargs='?',
        type=Path,
        default=None,
        help='input image (default: the bundled sample picture)',
    )
    parser.add_argument(
        '--encoder',
        default=DEFAULT_ENCODER,
        help=f'timm model name of the encoder (default: {DEFAULT_ENCODER})',
    )
    parser.add_argument(
        '--layer',
        type=int,
        default=-1,
        help='encoder feature layer (block for ViTs, stage for CNNs); negative counts from the '
        'end (default: -1)',
    )
    parser.add_argument(
        '--no-norm',
        action='store_true',
        help="do not apply the encoder's final norm to the features",
    )
    parser.add_argument('--checkpoint', type=Path, default=None, help='local encoder checkpoint')
    parser.add_argument(
        '--upsampler-checkpoint',
        default=None,
        metavar='PATH_OR_NAME',
        help=f'local AnyUp checkpoint or published name (default: {DEFAULT_UPSAMPLER})',
    )
    parser.add_argument(
        '--random-weights',
        action='store_true',
        help='randomly initialise every component that has no local checkpoint instead of '
        'downloading weights (pipeline testing only)',
    )
    parser.add_argument(
        '--size',
        type=int,
        default=448,
        help='short side of the resized image in pixels (default: 448)',
    )
    parser.add_argument(
        '--output',
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f'PNG panel to write (default: {DEFAULT_OUTPUT})',
    )
    parser.add_argument(
        '--save-features',
        type=Path,
        default=None,
        metavar='FILE.pt',
        help='also save the low-res and upsampled features with torch.save',
    )
    parser.add_argument(
        '--device',
        choices=('cpu', 'cuda'),
        default=None,
        help='device (default: cuda when available, else cpu)',
    )
    parser.add_argument('--seed', type=int, default=0, help='seed for random initialisation')
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f'--size must be positive, got {args.size}')
    return args


def warn(message: str) -> None:
    bar = '!' * 78
    print(f'{bar}\nWARNING: {message}\n{bar}', file=sys.stderr, flush=True)


@contextmanager
def timed(what: str) -> Iterator[None]:
    print(f'{what} ...', flush=True)
    start = time.perf_counter()
    yield
    print(f'{what}: done in {time.perf_counter() - start:.2f} s', flush=True)


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ToolError('--device cuda was requested but CUDA is not available here')
    return torch.device(name)


def load_upsampler(args: argparse.Namespace) -> torch.nn.Module:
    from anyup_plugin import AnyUp

    if args.upsampler_checkpoint is None and args.random_weights:
        warn(
            'AnyUp is RANDOMLY INITIALISED (--random-weights): the upsampled features are not '
            'meaningful. Pass --upsampler-checkpoint PATH for real results.'
        )
        return AnyUp().eval()
    source = args.upsampler_checkpoint or DEFAULT_UPSAMPLER
    try:
        return AnyUp.from_pretrained(source).eval()
    except Exception as exc:
        hint = (
            'Pass --upsampler-checkpoint with a local AnyUp checkpoint file'
            + ('' if args.upsampler_checkpoint else ', or --random-weights to test the pipeline')
            + '.'
        )
        raise ToolError(
            f'could not load AnyUp weights {str(source)!r}: {type(exc).__name__}: {exc}\n{hint}'
        ) from exc


def load_encoder(args: argparse.Namespace) -> torch.nn.Module:
    from anyup_plugin.core.encoder import FrozenTimmEncoder

    kwargs = dict(layers=args.layer, apply_norm=not args.no_norm)
    if args.checkpoint is not None:
        try:
            return FrozenTimmEncoder(args.encoder, checkpoint=args.checkpoint, **kwargs)
        except (ValueError, FileNotFoundError) as exc:
            raise ToolError(f'could not build encoder {args.encoder!r}: {exc}') from exc
    if args.random_weights:
        warn(
            f'encoder {args.encoder!r} is RANDOMLY INITIALISED (--random-weights): its features '
            'are not meaningful. Pass --checkpoint PATH for real results.'
        )
        try:
            return FrozenTimmEncoder(args.encoder, pretrained=False, **kwargs)
        except ValueError as exc:
            raise ToolError(f'could not build encoder {args.encoder!r}: {exc}') from exc
    try:
        return FrozenTimmEncoder(args.encoder, pretrained=True, **kwargs)
    except ValueError as exc:
        raise ToolError(f'could not build encoder {args.encoder!r}: {exc}') from exc
    except RuntimeError as exc:
        raise ToolError(
            f'{exc}\nPass --checkpoint PATH with local encoder weights, or --random-weights to '
            'test the pipeline without weights. (Offline, the Hugging Face downloader retries '
            'for about a minute before failing; HF_HUB_OFFLINE=1 makes it fail at once.)'
        ) from exc


def prepare_output(path: Path) -> Path:
    """Makes sure ``path``'s folder exists (creating it) and ``path`` is not a folder."""
    path = path.expanduser()
    if path.is_dir():
        raise ToolError(f'output {str(path)!r} is a folder; expected a file path')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f'cannot create the folder of output {str(path)!r}: {exc}') from exc
    return path


def run(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    image_path = args.image if args.image is not None else sample_image_path()
    if not image_path.is_file():
        raise ToolError(f'image {str(image_path)!r} does not exist or is not a file')
    output = prepare_output(args.output)
    features_out = prepare_output(args.save_features) if args.save_features else None
    print(f'device: {device}; image: {image_path}')
    if args.random_weights:
        torch.manual_seed(args.seed)

    with timed('loading AnyUp'):
        upsampler = load_upsampler(args).to(device)
    with timed(f'building encoder {args.encoder}'):
        encoder = load_encoder(args).to(device)

    try:
        image = load_image(image_path, args.size, encoder.patch_size)
    except ValueError as exc:
        raise ToolError(str(exc).replace('size must', '--size must')) from exc
    print(
        f'image resized and cropped to {image.size[0]}x{image.size[1]} '
        f'(multiple of the patch size {encoder.patch_size})'
    )
    with timed('encoding and upsampling with AnyUp'):
        result = upsample_image(image, encoder, upsampler)
    print(f'low-res features: {tuple(result.lowres.shape)} (layer {encoder.layers[0]})')
    print(f'upsampled features: {tuple(result.upsampled.shape)}')

    metadata = {
        'encoder': args.encoder,
        'layer': int(encoder.layers[0]),
        'random_weights': bool(args.random_weights),
    }
    with timed('PCA visualisation and writing'):
        save_upsampled_features(result, output, features_out, metadata)
    print(f'wrote {output} (image | low-res PCA | upsampled PCA)')
    if features_out is not None:
        print(f'wrote {features_out}')


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; returns the process exit code."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        run(args)
    except ToolError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'total: {time.perf_counter() - start:.2f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
