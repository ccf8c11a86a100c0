"""Format sniffing, completeness and the never-crash entry point, over the whole corpus."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reskontro.adapters import payment_files
from reskontro.adapters.payment_files import (
    is_complete,
    read_payment_bytes,
    read_payment_file,
    sniff_format,
)
from reskontro.domain import InputError, PaymentFile

FORMAT_OF_DIR = {"cremul": "cremul", "ocr": "ocr_giro", "camt054": "camt054"}
#: corpus files that are refused, and a phrase of the reason
REFUSED = {
    "bsgrd__cremul_invalid_service_segment.edi": "must start with UNA or UNB",
    "genkgo__camt054.v2.xml": "TxDtls without an amount",
    "genkgo__camt054.v4.xml": "Btch/NbOfTxs says 2",
    "genkgo__camt054.v8.xml": "Btch/NbOfTxs says 2",
}


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for d in FORMAT_OF_DIR for p in (corpus / d).iterdir())


def test_every_corpus_file_is_sniffed_complete_and_read_or_refused(corpus: Path) -> None:
    files = corpus_files(corpus)
    assert len(files) == 14 + 4 + 5
    read = 0
    for path in files:
        data = path.read_bytes()
        assert sniff_format(data) == FORMAT_OF_DIR[path.parent.name], path.name
        assert is_complete(data), path.name
        if path.name in REFUSED:
            with pytest.raises(InputError, match=rf"^{path.name}: .*{REFUSED[path.name]}"):
                read_payment_file(path)
        else:
            pf = read_payment_file(path)
            assert isinstance(pf, PaymentFile) and pf.format == sniff_format(data)
            read += 1
    assert read == 19


@pytest.mark.parametrize("name", ["cremul/perspilling__CREMUL0003.DAT",
                                  "cremul/perspilling__cremul_multi_lines.txt",
                                  "ocr/Ondkloss__ocr1.txt",
                                  "ocr/otovo__ocr_giro_transactions.txt",
                                  "camt054/viafintech__valid_example.xml"])
@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_copies_are_incomplete_and_refused(corpus: Path, tmp_path: Path, name: str,
                                                     keep: float) -> None:
    data = (corpus / name).read_bytes().rstrip()
    cut = tmp_path / Path(name).name
    cut.write_bytes(data[:int(len(data) * keep)])
    assert not is_complete(cut.read_bytes())
    with pytest.raises(InputError, match=rf"^{cut.name}: .*(line|segment|UNZ)"):
        read_payment_file(cut)


def test_sniff_unknown_and_edge_input() -> None:
    assert sniff_format(b"") is None
    assert sniff_format(b"%PDF-1.4 ...") is None
    assert sniff_format(b"<html><body/></html>") is None
    assert sniff_format(b"\xef\xbb\xbfUNA:+,? 'UNB+UNOC:3") == "cremul"
    assert sniff_format(b"UNE:+,UNB+UNOC:2+1+2+210429:1321+1'UNH+1+CREMUL:D:96A:UN'") == "cremul"
    assert sniff_format(b"\r\n<?xml version='1.0'?><Document xmlns='urn:iso:std:iso:20022:"
                        b"tech:xsd:camt.054.001.08'>") == "camt054"
    assert not is_complete(b"garbage") and not is_complete(b"")
    assert is_complete(b"UNA:+,? 'UNB+X+Y'UNZ+0+Y'   \n")
    assert not is_complete(b"UNA:+,? 'UNB+X+Y'UNZ+0+Y?'")   # released terminator is data


def test_empty_garbage_missing_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.edi"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"^empty\.edi: empty file"):
        read_payment_file(empty)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 20_000)            # 5 MB of noise
    with pytest.raises(InputError, match=r"^garbage\.bin: not a known payment file"):
        read_payment_file(garbage)
    with pytest.raises(InputError, match=r"^missing\.xml: cannot read"):
        read_payment_file(tmp_path / "missing.xml")
    with pytest.raises(InputError, match=r"^sub: cannot read"):
        (tmp_path / "sub").mkdir()
        read_payment_file(tmp_path / "sub")


def test_huge_file_is_refused_by_size_before_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.edi"
    with huge.open("wb") as f:             # 100 MB, sparse: costs no disk and no time
        f.write(b"UNA:+,? 'UNB+UNOC:3+1+2+260101:0000+1'")
        f.truncate(100 * 1024 * 1024)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"^huge\.edi: 104857600 bytes is over the 67108864-byte"
                                         r" limit"):
        read_payment_file(huge)
    assert time.perf_counter() - t0 < 1.0
    small_limit = tmp_path / "a.edi"
    small_limit.write_bytes(b"x" * 2000)
    with pytest.raises(InputError, match="over the 1000-byte limit"):
        read_payment_file(small_limit, max_bytes=1000)


def test_unexpected_reader_errors_are_wrapped(monkeypatch: pytest.MonkeyPatch,
                                              corpus: Path) -> None:
    def broken(data: bytes, name: str) -> PaymentFile:
        raise KeyError("surprise")

    monkeypatch.setitem(payment_files._READERS, "cremul", broken)
    path = corpus / "cremul" / "perspilling__CREMUL0002.DAT"
    with pytest.raises(InputError, match=r"^perspilling__CREMUL0002\.DAT: unexpected KeyError "
                                         r"while reading cremul: 'surprise'") as e:
        read_payment_file(path)
    assert isinstance(e.value.__cause__, KeyError)


@settings(max_examples=200, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_or_random_bytes_never_crash(corpus: Path, data: st.DataObject) -> None:
    files = corpus_files(corpus)
    if data.draw(st.booleans()):
        raw = data.draw(st.binary(max_size=400))
        name = "random.bin"
    else:
        path = data.draw(st.sampled_from(files))
        raw = bytearray(path.read_bytes())
        start = data.draw(st.integers(0, len(raw)))
        end = data.draw(st.integers(start, min(len(raw), start + 50)))
        raw[start:end] = data.draw(st.binary(max_size=20))
        name = path.name
    try:
        pf = read_payment_bytes(bytes(raw), name)
    except InputError as e:
        assert str(e).startswith(f"{name}: ")
    else:
        assert pf.format in ("cremul", "camt054", "ocr_giro")
