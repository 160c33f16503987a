"""The question-answering core: articles, sentences, index, answers, storage. No Discord here."""
