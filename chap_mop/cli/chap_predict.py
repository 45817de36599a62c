"""``chap-predict``: sitting or not sitting for every 10-s window, in DeepPostures' CSV format."""
import argparse

from chap_mop.cli.common import (add_day_file_flags, add_progress_flag, add_spark_flags, alias_help, new_parser,
                                 run_program)
from chap_mop.predict.predictions import PADDING_MODES
from chap_mop.predict.pretrained import NAMES
from chap_mop.predict.stage import PredictSettings


def build_parser(defaults: PredictSettings, description: str | None = None, prog: str | None = None
                 ) -> argparse.ArgumentParser:
    """The flags of the prediction stage, each defaulting to ``defaults``."""
    from chap_mop.predict import stage

    parser = new_parser(description or stage.__doc__, prog)
    data = parser.add_argument_group("data")
    add_day_file_flags(data, "pre_processed_dir", defaults.pre_processed_dir, defaults.skip_bad_files)
    model = parser.add_argument_group("model")
    model.add_argument("--results", "--model-checkpoint-path", dest="results", default=defaults.results,
                       metavar="DIR", help=alias_help("results folder of chap-select (model_selection.py); its best "
                                                      "model predicts", "--model-checkpoint-path"))
    model.add_argument("--ensemble", action="store_true", default=defaults.ensemble,
                       help="predict with the results folder's ensemble (ensemble.json), a majority vote")
    model.add_argument("--model", default=defaults.model, metavar="NAME",
                       help="instead of --results, DeepPostures' pre-trained model NAME: one of "
                            f"{', '.join(NAMES)} (CHAP: the majority vote of CHAP_A, CHAP_B and CHAP_C)")
    model.add_argument("--pretrained-dir", default=defaults.pretrained_dir, metavar="DIR",
                       help="with --model: the folder holding NAME.pth (DeepPostures' "
                            "MSSE-2021/pre-trained-models-pt), read on this machine only")
    model.add_argument("--padding", default=defaults.padding, choices=PADDING_MODES,
                       help="windows after a segment's last full sequence: drop them, zero-pad, or wrap (predict "
                            "the last T windows)")
    model.add_argument("--batch-size", type=int, default=defaults.batch_size, help="sequences per predict call")
    output = parser.add_argument_group("output")
    output.add_argument("--predictions-dir", default=defaults.predictions_dir, metavar="DIR",
                        help="folder for <model name>/<subject_id>.csv: new, empty, or written here before; "
                             "visible to every worker")
    output.add_argument("--output-label", action="store_true", default=defaults.output_label,
                        help="add the label column (from the day files)")
    output.add_argument("--no-segment", action="store_true", default=defaults.no_segment,
                        help="leave out the segment column")
    output.add_argument("--probabilities", action="store_true", default=defaults.probabilities,
                        help="add probability_sitting (the ensemble's: mean of its members')")
    output.add_argument("--activpal-label-map", default=defaults.activpal_label_map, metavar="JSON",
                        help="words for the labels 0, 1 and -1, as DeepPostures takes them (default: "
                             "'{\"sitting\": 0, \"not-sitting\": 1, \"no-label\": -1}')")
    add_progress_flag(add_spark_flags(parser, defaults.master, defaults.verbose), defaults.progress_every_s)
    return parser


def main(argv: list[str] | None = None, defaults: PredictSettings | None = None, description: str | None = None
         ) -> None:
    """Parse ``argv`` (flags override ``defaults``) and predict; exits non-zero on failure."""
    run_program(build_parser(defaults or PredictSettings(), description), argv, PredictSettings, predict)


def predict(settings: PredictSettings) -> None:
    from chap_mop.predict.stage import predict as predict_stage

    predict_stage(settings)


if __name__ == "__main__":
    main()
