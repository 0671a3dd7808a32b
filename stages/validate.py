"""validate: check every ticker's bars; stop on a finding (policy fail) or repair and list it."""

import logging

from lib.cli import path_args, run_stage
from lib.data.validation import check_schema, failure_message, fatal_findings, report, validate_prices
from lib.errors import PipelineError
from lib.io import read_table, write_json, write_table
from lib.params import load_params

log = logging.getLogger("validate")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "prices", "out", "report")
    params = load_params()
    cfg = params["validate"]
    raw = check_schema(read_table(args.prices, []), str(args.prices))
    clean, findings = validate_prices(raw, cfg, params["data"]["tickers"], params["data"]["calendar"])
    write_json(report(raw, clean, findings, cfg["policy"]), args.report)
    fatal = fatal_findings(findings, cfg["policy"])
    if fatal:
        raise PipelineError(failure_message(fatal, str(args.report)))
    for f in findings:
        log.warning("%s %s %s %s: %s -> %s", f.ticker, f.date, f.column or "-", f.rule, f.detail, f.action)
    write_table(clean, args.out)
    log.info("%d rows passed, %d finding(s) repaired or kept", len(clean), len(findings))


if __name__ == "__main__":
    run_stage("validate", main)
