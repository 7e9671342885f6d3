"""What every benchmark entry point's command line shares: ``--help`` that states each default."""

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default to its help, except where there is none to state (``None``,
    or a hidden option), where the help states it in words, or for on/off flags (a flag's
    default ``False`` reads as if it were a value); keeps the description's line breaks."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or "default" in help_text or isinstance(action.default, bool):
            return help_text
        return super()._get_help_string(action)
