"""The sentence generator: distinct, deterministic, plenty of sentences."""

from streamvc_rvq.data.sentences import sentences


def test_distinct_deterministic_and_seeded():
    a = sentences(400, seed=1234)
    assert len(a) == 400 and len(set(a)) == 400
    assert a == sentences(400, seed=1234)
    assert a != sentences(400, seed=1235)
    assert sentences(50, seed=1234) == a[:50]  # a prefix of a longer draw


def test_thousands_reachable_and_look_like_sentences():
    many = sentences(5000, seed=0)
    assert len(set(many)) == 5000
    for s in many[:500]:
        assert s[0].isupper() and s[-1] in ".?"
        assert 3 <= len(s.split()) <= 40
        assert "  " not in s
    assert any("," in s for s in many[:100])  # clauses joined with a comma (a pause)
    assert any(s.count(".") >= 2 for s in many[:100])  # two sentences in one utterance
