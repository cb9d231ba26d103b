FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Pango and fonts for the PDF study report (GET /compare/report?format=pdf, WeasyPrint).
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 \
    libpangoft2-1.0-0 fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY core core
COPY analysis analysis
COPY demo demo
COPY models models
COPY workers workers
COPY service service
COPY cli cli
COPY migrations migrations
COPY alembic.ini ./
RUN pip install .
EXPOSE 8000
CMD ["foodlab", "api", "--host", "0.0.0.0", "--port", "8000"]
