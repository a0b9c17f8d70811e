"""Reference reader for the differential test: reads a printer.cfg tree with
Python's own configparser, following the steps Klipper's klippy/configfile.py
takes (SAVE_CONFIG split and duplicate stripping, '#' comments cut anywhere,
[include] globs relative to the including file, one configparser read per
run of lines between includes). Prints {section: {option: value}} as JSON.

Usage: python3 klipper_reference.py PRINTER_CFG
"""
import configparser
import glob
import io
import json
import os
import re
import sys

HEADER = ("\n#*# <---------------------- SAVE_CONFIG ---------------------->\n"
          "#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.\n"
          "#*#\n")


def read(path):
    with open(path) as f:
        return f.read().replace('\r\n', '\n')


def split_autosave(data):
    pos = data.find(HEADER)
    if pos < 0:
        return data, ""
    regular, block = data[:pos], data[pos + len(HEADER):].strip()
    if "\n#*# " in regular:
        return data, ""
    out = [""]
    for line in block.split('\n'):
        if (not line.startswith("#*#") or
                (len(line) >= 4 and not line.startswith("#*# "))) and block:
            return data, ""
        out.append(line[4:])
    out.append("")
    return regular, "\n".join(out)


def strip_duplicates(data, parser):
    lines = data.split('\n')
    section, dup = None, False
    for i, line in enumerate(lines):
        pruned = re.sub('[#;].*$', '', line).rstrip()
        if not pruned:
            continue
        if pruned[0].isspace():
            if dup:
                lines[i] = '#' + lines[i]
            continue
        dup = False
        if pruned[0] == '[':
            section = pruned[1:-1].strip()
            continue
        field = re.sub('[^A-Za-z0-9_].*$', '', pruned)
        if parser.has_section(section) and parser.has_option(section, field):
            dup = True
            lines[i] = '#' + lines[i]
    return "\n".join(lines)


def parse(data, filename, parser, visited):
    path = os.path.abspath(filename)
    if path in visited:
        raise Exception("recursive include " + filename)
    visited.add(path)
    buf = []

    def flush():
        if buf:
            parser.read_file(io.StringIO('\n'.join(buf)), filename)
            del buf[:]
    for line in data.split('\n'):
        pos = line.find('#')
        if pos >= 0:
            line = line[:pos]
        mo = configparser.RawConfigParser.SECTCRE.match(line)
        header = mo and mo.group('header')
        if header and header.startswith('include '):
            flush()
            spec = os.path.join(os.path.dirname(filename), header[8:].strip())
            names = glob.glob(spec)
            if not names and not glob.has_magic(spec):
                raise Exception("missing include " + spec)
            for name in sorted(names):
                parse(read(name), name, parser, visited)
        else:
            buf.append(line)
    flush()
    visited.remove(path)


def build(data, filename):
    parser = configparser.RawConfigParser(
        strict=False, inline_comment_prefixes=(';', '#'))
    parse(data, filename, parser, set())
    return parser


def main():
    filename = sys.argv[1]
    regular, autosave = split_autosave(read(filename))
    autosave = strip_duplicates(autosave, build(regular, filename))
    parser = build(regular + autosave, filename)
    print(json.dumps({s: dict(parser.items(s)) for s in parser.sections()},
                     sort_keys=True))


main()
