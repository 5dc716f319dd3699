"""The `hf-deit` command: convert | shard | predict | analyze | cache-teacher | recipe | app | space | push.

    hf-deit convert --from timm deit_tiny_distilled_patch16_224 ./deit-tiny   # timm name, .pth/.safetensors path
    hf-deit convert --from official deit_small_distilled_patch16_224-649709d9.pth ./deit-small
    hf-deit convert --from transformers facebook/deit-base-distilled-patch16-224 ./deit-base
    hf-deit shard ./imagenet ./imagenet-shards --num-shards 64 --format parquet
    hf-deit predict ./deit-tiny photo1.jpg photo2.jpg --top-k 5
    hf-deit predict ./deit-tiny ./photos/            # every image under a folder
    hf-deit predict runs/teacher_cifar10 cat.png     # a timm folder from examples/train_teacher.py works too
    hf-deit --version
    hf-deit cache-teacher runs/teacher_cifar10 ../shared/data/cifar10 runs/teacher_cifar10/cache-train.parquet
    hf-deit analyze ./deit-tiny-distilled ./imagenet --split validation --teacher timm/regnety_160.deit_in1k
    hf-deit recipe --dataset_size 1281167 --world_size 8 --per_device_train_batch_size 128   # any distill.py flag
    hf-deit app ./deit-tiny-distilled --teacher runs/teacher --examples ./photos   # the demo page (needs .[app])
    hf-deit space ./deit-tiny-distilled ./space --examples ./photos   # the same page as a Hugging Face Space folder
    hf-deit push ./deit-tiny-distilled you/deit-tiny-distilled --private   # weights, code, card, curves, analysis

Errors are one line on stderr with exit code 1; `hf-deit --debug ...` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _convert(args: argparse.Namespace) -> None:
    from .hub.convert import convert_cli

    out = convert_cli(args.source_format, args.source, args.output_dir, preset=args.preset)
    print(f"Saved to {out}")


def _shard(args: argparse.Namespace) -> None:
    from .data import shard_dataset

    # One line per split: its shard sizes and the ranks x workers the shard count suits (a training stream whose
    # shards the readers cannot share evenly is refused before training: hf_deit.data.shards.check_stream_shards).
    paths = shard_dataset(args.source, args.output_dir, num_shards=args.num_shards, format=args.format, report=print)
    print(f"Wrote {len(paths)} shard files under {args.output_dir}")


def _image_paths(inputs: list[str]) -> list[str]:
    """Files as given; folders expanded to the image files under them (sorted, recursive)."""
    from PIL import Image

    extensions = {ext.lower() for ext in Image.registered_extensions()}
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                raise FileNotFoundError(f"no image files under the folder {item}")
            paths.extend(found)
        elif path.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"no such image file or folder: {item}")
    return paths


def _predict(args: argparse.Namespace) -> None:
    from .sources import hub_failure_hint, require_source
    from .inference import image_classifier

    paths = _image_paths(args.images)  # checked before the (slow) model load
    source = require_source(args.model, "model folder")  # a missing local folder is said so, not sent to the Hub
    try:
        classifier = image_classifier(source.location, args.device)
    except OSError as error:
        if source.local:
            raise
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):  # the Hub's error is noise here
            raise FileNotFoundError(f"model folder not found: {args.model} ({hub_failure_hint(args.model)})") from error
        raise OSError(f"could not load the model {args.model!r} ({hub_failure_hint(args.model)}): {error}") from error
    failed = _classify_files(classifier, paths, args.top_k)
    if failed:
        raise RuntimeError(f"{failed} of {len(paths)} images could not be read (each is named above); the others "
                           "were classified")


def _classify_files(classifier, paths: list[str], top_k: int, chunk: int = 16) -> int:
    """Print the top-k of every readable file, in order; name each unreadable one on stderr. Returns how many failed.
    Files are decoded here, a chunk at a time, so that one bad file stops neither the others nor the run."""
    from .models.image_decoding import UnreadableImageError, load_image

    failed = 0
    for start in range(0, len(paths), chunk):
        readable, images = [], []
        for path in paths[start : start + chunk]:
            try:
                images.append(load_image(path))
                readable.append(path)
            except UnreadableImageError as error:  # its message names the file and says why
                failed += 1
                print(f"hf-deit: skipped: {error}", file=sys.stderr)
            except OSError as error:  # e.g. permission denied
                failed += 1
                print(f"hf-deit: skipped: cannot read the image {path}: {error.strerror or error}", file=sys.stderr)
        for path, predictions in zip(readable, classifier(images, top_k=top_k) if images else []):
            print(path)
            for p in predictions:
                print(f"  {p['score']:.3f}  {p['label']}")
    return failed


class _VersionAction(argparse.Action):
    """`--version`, importing the libraries only when asked (every other command would pay for it)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        from . import __version__

        libraries = ", ".join(f"{name} {version(name)}" for name in ("transformers", "timm", "torch"))
        print(f"hf-deit {__version__} ({libraries})")
        parser.exit()


def _analyze(args: argparse.Namespace) -> None:
    from .analysis import analyze_cli

    result, paths = analyze_cli(
        args.model, args.data, split=args.split, teacher=args.teacher, output_dir=args.output_dir,
        max_samples=args.max_samples, num_images=args.num_images, batch_size=args.batch_size, device=args.device,
    )
    print("cosine(cls, distillation) per layer: " + ", ".join(f"{v:.2f}" for v in result.cosine_similarity))
    for pair, value in result.agreement.items():
        print(f"agreement {pair}: {100 * value:.1f}%")
    for name, path in paths.items():
        print(f"{name}: {path}")


def _cache_teacher(args: argparse.Namespace) -> None:
    from .distillation.teacher_cache import cache_teacher_cli

    info = cache_teacher_cli(
        args.teacher, args.data, args.output, split=args.split, input_size=args.input_size, top_k=args.top_k,
        batch_size=args.batch_size, num_workers=args.num_workers, max_samples=args.max_samples, device=args.device,
    )
    print(f"Cached {info.teacher} on {info.num_rows} images of {info.dataset} [{info.split}]: {info.map_size[0]}x"
          f"{info.map_size[1]} label maps, top-{info.top_k} of {info.num_classes} classes, at {info.input_size} px")
    print(f"Saved to {args.output}; train with --teacher_cache {args.output}")


def _recipe(args: argparse.Namespace) -> None:
    from .distillation.recipe_cli import recipe_report

    print(recipe_report(args.flags))


def _app(args: argparse.Namespace) -> None:
    from .app import build_demo, image_files, import_gradio, load_model

    import_gradio()  # the one-line install hint comes before the model load
    examples = image_files(args.examples)
    model, processor = load_model(args.model, args.device)
    teacher = None
    if args.teacher:
        from .distillation.teacher import load_teacher

        # The teacher sees the student's crop, renormalised and resized for itself, as in training.
        teacher = load_teacher(args.teacher, num_labels=model.config.num_labels, device=model.device,
                               student_mean=processor.image_mean, student_std=processor.image_std)  # fmt: skip
    demo = build_demo(model, processor, teacher=teacher, examples=examples)
    demo.launch(server_name=args.host, server_port=args.port)


def _space(args: argparse.Namespace) -> None:
    from .space import write_space

    paths = write_space(args.model, args.output_dir, examples=args.examples, space_id=args.space_id, title=args.title)
    for role, path in paths.items():
        print(f"{role}: {path}")
    print(f"Run it here: cd {args.output_dir} && python app.py   Share it: hf upload --repo-type space "
          f"{args.space_id or '<you>/<space-name>'} {args.output_dir} .")


def _push(args: argparse.Namespace) -> None:
    from .hub.model_card import push_folder

    commit = push_folder(args.model, args.repo_id, private=args.private or None, revision=args.revision)
    print(f"Uploaded {args.model} to https://huggingface.co/{args.repo_id} ({getattr(commit, 'commit_url', commit)})")


def _add_sharing_commands(sub) -> None:
    """app | space | push: show a model and share it."""
    p = sub.add_parser("app", help='the demo page (gradio): the heads\' top-5 and the tokens\' attention on an image')
    p.add_argument("model", help="a saved distilled hf_deit folder or Hub id")
    p.add_argument("--teacher", default=None, help="a teacher (as --teacher_name_or_path) shown beside the heads")
    p.add_argument("--examples", default=None, help="a folder of example images")
    p.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT or 7860")
    p.add_argument("--host", default=None, help="default: 127.0.0.1 (0.0.0.0 serves other machines too)")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cpu)")
    p.set_defaults(func=_app)

    p = sub.add_parser("space", help="write a Hugging Face Space folder running the demo page for a model")
    p.add_argument("model", help="a saved distilled hf_deit folder (copied into the Space) or Hub id (referenced)")
    p.add_argument("output_dir")
    p.add_argument("--examples", default=None, help="a folder of example images (copied)")
    p.add_argument("--space-id", default=None, help="owner/name the Space will have: the model card links it")
    p.add_argument("--title", default=None)
    p.set_defaults(func=_space)

    p = sub.add_parser("push", help="upload a saved model folder to the Hub (weights, code, card, curves, analysis)")
    p.add_argument("model", help="a saved hf_deit model folder")
    p.add_argument("repo_id", help="owner/name on the Hub (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, help="a branch to upload to (created when missing)")
    p.set_defaults(func=_push)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-deit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction, help="show the versions of hf-deit and its main libraries")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a timm / official / transformers DeiT checkpoint to hf_deit")
    p.add_argument("--from", dest="source_format", required=True, choices=["timm", "official", "transformers"])
    p.add_argument("source", help="timm model name or checkpoint path; official .pth; transformers dir or Hub id")
    p.add_argument("output_dir")
    p.add_argument("--preset", default=None, help="DeiT preset name when it cannot be inferred from the source")
    p.set_defaults(func=_convert)

    p = sub.add_parser("shard", help="turn an ImageNet-layout folder into parquet or webdataset shards")
    p.add_argument("source", help="folder with train/<class>/*.JPEG and/or val/<class>/*.JPEG")
    p.add_argument("output_dir")
    p.add_argument("--num-shards", "--num_shards", type=int, default=16,
                   help="shards per split: a multiple of processes x DataLoader workers per process of the training")
    p.add_argument("--format", choices=["parquet", "webdataset"], default="parquet")
    p.set_defaults(func=_shard)

    p = sub.add_parser(
        "predict", help="classify images with a saved model folder (hf_deit, transformers or timm) or Hub id"
    )
    p.add_argument("model")
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: transformers picks)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("analyze", help="the paper's analysis of the cls and distillation tokens (tables + attention PNG)")
    p.add_argument("model", help="a saved distilled hf_deit model directory or Hub id")
    p.add_argument("data", help="dataset folder / shards / Hub id, as --dataset_name of examples/distill.py")
    p.add_argument("--split", default="validation", help="evaluation split (a folder's val/ is 'validation')")
    p.add_argument("--teacher", default=None, help="teacher (as --teacher_name_or_path) for the agreement with it")
    p.add_argument("--output-dir", default=None, help="default: <model>/analysis, linked from <model>/README.md")
    p.add_argument("--max-samples", type=int, default=None, help="analyse only the first N images")
    p.add_argument("--num-images", type=int, default=4, help="images in the attention-map PNG")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cuda when available)")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("cache-teacher", help="one teacher pass storing dense top-k label maps (train with --teacher_cache)")
    p.add_argument("teacher", help="a timm CNN teacher (name, Hub id or local timm directory), as --teacher_name_or_path")
    p.add_argument("data", help="dataset folder / shards / Hub id, as --dataset_name")
    p.add_argument("output", help="the parquet file to write, e.g. beside the image shards")
    p.add_argument("--split", default="train")
    p.add_argument("--input-size", type=int, default=None, help="the teacher sees each whole image at this size "
                   "(default: the teacher's own input size)")
    p.add_argument("--top-k", type=int, default=10, help="logits kept per map location (k >= classes: exact)")
    p.add_argument("--max-samples", type=int, default=None, help="as --max_train_samples of the training run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding the images")
    p.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cuda when available)")
    p.set_defaults(func=_cache_teacher)
    _add_recipe_parser(sub)
    _add_sharing_commands(sub)
    return parser


def _add_recipe_parser(sub) -> None:
    p = sub.add_parser(
        "recipe", add_help=False,
        help="print what a run would be (batch, lr, steps, teacher forwards, checkpoints) and every recipe value "
        "beside the paper's official one; takes examples/distill.py's flags + --world_size, --dataset_size "
        "(`hf-deit recipe --help` lists them)",
    )
    p.add_argument("flags", nargs=argparse.REMAINDER)
    p.set_defaults(func=_recipe)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "recipe":  # its flags are examples/distill.py's, parsed by HfArgumentParser
        args.flags = unknown + args.flags
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.debug:
        args.func(args)
        return 0
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("hf-deit: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (any failure becomes one line; --debug shows the traceback)
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"hf-deit: error: {message} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
